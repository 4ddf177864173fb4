// Package envtest starts real Kubernetes API servers (kube-apiserver + etcd, no kubelet; with Options.Collectors also
// kube-controller-manager's garbage collector and namespace controller) for tests, each standing for one cluster, with
// every CRD in deploy/crds installed. It wraps controller-runtime's envtest with fedgate's conventions: binaries come
// from bin/envtest (built by hack/envtest-bins.sh from the Go module proxy, since nothing else can be downloaded here),
// several clusters start in parallel, and everything stops in t.Cleanup.
//
// Only tests import this package.
package envtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crenvtest "sigs.k8s.io/controller-runtime/pkg/envtest"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gatewayxv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
)

// Scheme knows every type fedgate reads or writes in a cluster: the built-in kinds, Gateway API (standard and
// experimental groups) and MCS API.
var Scheme = newScheme()

func newScheme() *k8sruntime.Scheme {
	s := k8sruntime.NewScheme()
	for _, add := range []func(*k8sruntime.Scheme) error{
		clientgoscheme.AddToScheme, gatewayv1.Install, gatewayv1beta1.Install, gatewayxv1a1.Install, mcsv1a1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// Cluster is one running API server.
type Cluster struct {
	Name string
	// Config reaches the API server as a cluster admin.
	Config *rest.Config
	// Client is a direct (uncached) client with Scheme.
	Client client.Client

	env            *crenvtest.Environment
	stopCollectors func() // kube-controller-manager, with Options.Collectors
}

// AddUser returns a config that authenticates as a new user with the given groups and no permissions beyond what
// RBAC grants them (the API servers authorize with RBAC), for testing that a component's roles suffice.
func (c *Cluster) AddUser(name string, groups ...string) (*rest.Config, error) {
	u, err := c.env.ControlPlane.AddUser(crenvtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: adding user %s: %w", c.Name, name, err)
	}
	cfg := u.Config()
	cfg.QPS, cfg.Burst = 500, 1000
	return cfg, nil
}

// Options tune Start.
type Options struct {
	// NoCRDs starts the API servers with no CRDs installed (for code that must cope with a cluster lacking them).
	NoCRDs bool
	// Collectors runs a kube-controller-manager beside each API server with the two controllers that delete what is
	// deleted: the garbage collector (dependents of a deleted owner) and the namespace controller (the contents of a
	// deleted namespace, then the namespace). Without them a deleted namespace stays Terminating and owned objects stay.
	Collectors bool
	// Controllers names more kube-controller-manager controllers to run in that same process (Collectors is implied),
	// e.g. deployment-controller, replicaset-controller and endpointslice-controller for tests whose Pods a stand-in
	// kubelet runs (test/conformance).
	Controllers []string
}

// RepoRoot is the fedgate checkout this file belongs to.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// CRDPaths are the directories of deploy/crds that hold CRDs.
func CRDPaths() []string {
	root := RepoRoot()
	return []string{filepath.Join(root, "deploy", "crds", "gateway-api"), filepath.Join(root, "deploy", "crds", "mcs-api")}
}

// Start starts one API server per name, in parallel, and stops them when t ends. It fails t if any cannot start.
func Start(t testing.TB, names ...string) []*Cluster { return StartWithOptions(t, Options{}, names...) }

// StartWithOptions is Start with options.
func StartWithOptions(t testing.TB, opts Options, names ...string) []*Cluster {
	t.Helper()
	cs, stop, err := Launch(opts, names...)
	if err != nil {
		t.Fatalf("envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Logf("envtest: %v", err)
		}
	})
	return cs
}

// Launch starts one API server per name, in parallel, for callers without a testing.TB (a TestMain sharing clusters
// between the tests of a package). stop stops every one of them; on error nothing is left running.
func Launch(opts Options, names ...string) (clusters []*Cluster, stop func() error, err error) {
	bins, err := Binaries()
	if err != nil {
		return nil, nil, err
	}
	clusters = make([]*Cluster, len(names))
	envs := make([]*crenvtest.Environment, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			clusters[i], envs[i], errs[i] = startOne(name, bins, opts)
		}()
	}
	wg.Wait()
	stop = func() error {
		var errs []error
		for i, env := range envs {
			if clusters[i] != nil && clusters[i].stopCollectors != nil {
				clusters[i].stopCollectors()
			}
			if env != nil {
				if err := env.Stop(); err != nil {
					errs = append(errs, fmt.Errorf("stopping cluster %q: %w", names[i], err))
				}
			}
		}
		return errors.Join(errs...)
	}
	for i, err := range errs {
		if err != nil {
			_ = stop()
			return nil, nil, fmt.Errorf("cluster %q: %w", names[i], err)
		}
	}
	return clusters, stop, nil
}

func startOne(name, bins string, opts Options) (*Cluster, *crenvtest.Environment, error) {
	env := &crenvtest.Environment{
		BinaryAssetsDirectory:    bins,
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: 2 * time.Minute, // two shared cores, several API servers starting at once
		ControlPlaneStopTimeout:  time.Minute,
		Scheme:                   Scheme,
	}
	if !opts.NoCRDs {
		env.CRDInstallOptions = crenvtest.CRDInstallOptions{Paths: CRDPaths(), ErrorIfPathMissing: true, Scheme: Scheme}
	}
	cfg, err := env.Start()
	if err != nil {
		_ = env.Stop()
		return nil, nil, err
	}
	// Client-side rate limiting only slows tests down; the API server is ours alone.
	cfg.QPS, cfg.Burst = 500, 1000
	c, err := client.New(cfg, client.Options{Scheme: Scheme})
	if err != nil {
		return nil, env, err
	}
	cl := &Cluster{Name: name, Config: cfg, Client: c, env: env}
	if opts.Collectors || len(opts.Controllers) > 0 {
		if err := cl.startCollectors(bins, opts.Controllers...); err != nil {
			return nil, env, err
		}
	}
	return cl, env, nil
}

// startCollectors starts kube-controller-manager with the garbage collector and the namespace controller (and the
// extra controllers named) only, as a cluster admin, serving nothing; it stops when the API server's control plane
// does (env.Stop kills it first).
func (c *Cluster) startCollectors(bins string, extra ...string) error {
	dir, err := os.MkdirTemp("", "fedgate-kcm-")
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: c.Config.Host, CertificateAuthorityData: c.Config.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: c.Config.CertData, ClientKeyData: c.Config.KeyData, Token: c.Config.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	kc.CurrentContext = "envtest"
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(dir, "kube-controller-manager.log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(bins, "kube-controller-manager"), "--kubeconfig="+kubeconfig,
		"--controllers="+strings.Join(append([]string{"garbage-collector-controller", "namespace-controller"}, extra...), ","),
		"--leader-elect=false", "--secure-port=0")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("kube-controller-manager: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	c.stopCollectors = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = os.RemoveAll(dir)
	}
	return nil
}

// buildMu serialises the binary check within one test process; the flock below serialises it across test processes
// (go test runs packages in parallel, and two concurrent builds of kube-apiserver would each take many minutes).
var buildMu sync.Mutex

// Binaries returns the directory holding kube-apiserver, etcd, kubectl and kube-controller-manager, running hack/envtest-bins.sh first when
// one is missing. KUBEBUILDER_ASSETS, when set, wins (the usual envtest convention).
func Binaries() (string, error) {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d, nil
	}
	root := RepoRoot()
	dir := filepath.Join(root, "bin", "envtest")
	if present(dir) {
		return dir, nil
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(root, "bin", ".envtest.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing the file releases it anyway
	if present(dir) {
		return dir, nil
	}
	cmd := exec.Command("bash", filepath.Join(root, "hack", "envtest-bins.sh"))
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("hack/envtest-bins.sh: %w\n%s", err, b)
	}
	if !present(dir) {
		return "", fmt.Errorf("hack/envtest-bins.sh succeeded but %s lacks kube-apiserver, etcd, kubectl or kube-controller-manager", dir)
	}
	return dir, nil
}

// Kubectl returns the path of a kubectl for the tests that run kubectl against these API servers: the one
// hack/envtest-bins.sh built beside them (the same Kubernetes release), or, with KUBEBUILDER_ASSETS set, the one there
// or else on PATH.
func Kubectl() (string, error) {
	dir, err := Binaries()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "kubectl")
	if _, err := os.Stat(p); err == nil || os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return p, err
	}
	return exec.LookPath("kubectl")
}

func present(dir string) bool {
	for _, b := range []string{"kube-apiserver", "etcd", "kubectl", "kube-controller-manager"} {
		st, err := os.Stat(filepath.Join(dir, b))
		if err != nil || st.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// Namespace creates a namespace with a generated name in c and returns its name. API servers without a controller
// manager never delete namespaces, so there is no cleanup: the API server itself goes away with the test.
func (c *Cluster) Namespace(t testing.TB) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "test-"}}
	if err := c.Client.Create(context.Background(), ns); err != nil {
		t.Fatalf("cluster %s: creating namespace: %v", c.Name, err)
	}
	return ns.Name
}

// RESTMapper returns the client's mapper (discovery-backed, refreshed on misses).
func (c *Cluster) RESTMapper() meta.RESTMapper { return c.Client.RESTMapper() }
