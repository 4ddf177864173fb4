package e2e

// TestInstallFromREADME runs the README's Kubernetes install path end to end against real API servers (envtest): the
// hub cluster and the member clusters east and west. Every kubectl and hubctl command is a line of the README, checked
// to be there word for word and run through bash with kubectl and hubctl on PATH; only its placeholders (HUB:9443,
// ID.SECRET, …) are filled in.
//
// No pod runs on an envtest API server, so the hub and the spokes run as processes, built from the Deployments the
// commands installed: the container's args and environment (downward API, the credentials Secret) expanded as the
// kubelet would, and started as the Deployment's ServiceAccount (a kubeconfig with a token of it), so deploy/'s RBAC
// is what they get. What a pod has to itself stands in as follows, and nothing else is changed: its volumes are
// directories; its network namespace is loopback, each container port a free port (0.0.0.0:9443 → 127.0.0.1:N), the
// gateway listeners offset there (--listen-host, --port-offset) and the embedded etcd on free ports; the in-cluster
// service account is --kubeconfig. A flag the Deployment passes that the binary lacks stops the process, and the test.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
	"sigs.k8s.io/yaml"

	hubctlapp "github.com/fedgate/fedgate/cmd/hubctl/app"
	"github.com/fedgate/fedgate/spoke/kstatus"
	"github.com/fedgate/fedgate/spoke/leader"
	"github.com/fedgate/fedgate/test/envtest"
)

// installEnv is where the README's commands run: a working directory holding deploy/ (a link to the checkout's) and
// the members' kubeconfigs, a HOME of its own, kubectl and the built hubctl on PATH, and the hub cluster as kubectl's
// current context.
type installEnv struct {
	readme string
	dir    string
	env    []string
}

// run runs line, a command of the README, through bash after filling its placeholders (old, new pairs), and returns
// its standard output. It fails t if the README lacks the line or the command fails.
func (e *installEnv) run(t *testing.T, line string, fill ...string) string {
	t.Helper()
	out, err := e.try(t, line, fill...)
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return out
}

func (e *installEnv) try(t *testing.T, line string, fill ...string) (string, error) {
	t.Helper()
	if !strings.Contains(e.readme, line) {
		t.Fatalf("README.md no longer has the command\n  %s\nupdate the README and this test together", line)
	}
	cmdline := strings.NewReplacer(fill...).Replace(line)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", cmdline)
	cmd.Dir, cmd.Env = e.dir, e.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

func (e *installEnv) setenv(k, v string) {
	e.env = slices.DeleteFunc(e.env, func(kv string) bool { return strings.HasPrefix(kv, k+"=") })
	e.env = append(e.env, k+"="+v)
}

// writeKubeconfig writes a kubeconfig reaching cfg's API server with cfg's credentials (a client certificate or a
// bearer token).
func writeKubeconfig(t *testing.T, path string, cfg *rest.Config, user string) {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts[user] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: user}
	kc.CurrentContext = user
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
}

// serviceAccountKubeconfig writes a kubeconfig that authenticates as the ServiceAccount namespace/name of c, with a
// token from the TokenRequest API: what the pod's projected token would be.
func serviceAccountKubeconfig(t *testing.T, c *envtest.Cluster, namespace, name, path string) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(context.Background(), name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("cluster %s: a token for ServiceAccount %s/%s: %v", c.Name, namespace, name, err)
	}
	cfg := rest.AnonymousClientConfig(c.Config)
	cfg.BearerToken = tr.Status.Token
	writeKubeconfig(t, path, cfg, "system:serviceaccount:"+namespace+":"+name)
}

// kustomize renders a base of deploy/ with kubectl, as kubectl apply -k does.
func kustomize(t *testing.T, kubectl, base string) []*unstructured.Unstructured {
	t.Helper()
	cmd := exec.Command(kubectl, "kustomize", filepath.Join(envtest.RepoRoot(), "deploy", base))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize deploy/%s: %v\n%s", base, err, stderr.String())
	}
	return decodeYAMLStream(t, out)
}

func decodeYAMLStream(t *testing.T, b []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := d.Decode(&u.Object); err != nil {
			if err.Error() == "EOF" {
				return objs
			}
			t.Fatalf("decoding YAML: %v", err)
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}

// checkApplied fails t unless every object of objs exists in c, and every CRD among them is Established.
func checkApplied(t *testing.T, c *envtest.Cluster, what string, objs []*unstructured.Unstructured) {
	t.Helper()
	ctx := context.Background()
	for _, o := range objs {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(o.GroupVersionKind())
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(o), got); err != nil {
			t.Errorf("cluster %s, after %s: %s %s: %v", c.Name, what, o.GetKind(), client.ObjectKeyFromObject(o), err)
			continue
		}
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		established := slices.ContainsFunc(conds, func(c any) bool {
			m, _ := c.(map[string]any)
			return m["type"] == string(apiextensionsv1.Established) && m["status"] == string(apiextensionsv1.ConditionTrue)
		})
		if !established {
			t.Errorf("cluster %s, after %s: CRD %s is not Established: %v", c.Name, what, o.GetName(), conds)
		}
	}
}

// pod is what the kubelet would give one replica of a Deployment.
type pod struct {
	name, namespace, ip string
	kubeconfig          string // the ServiceAccount's
	dir                 string // the volumes' directories live here
	ports               map[int32]int
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// command turns the Deployment's container into the process a pod would run: its args with $(VAR) expanded from its
// environment (downward API fields and Secrets, read from c), listen addresses on 0.0.0.0 moved to loopback ports and
// volume mount paths to directories. It returns the args and the process environment.
func (p *pod) command(t *testing.T, c *envtest.Cluster, dep *appsv1.Deployment, container string) ([]string, []string) {
	t.Helper()
	ctx := context.Background()
	i := slices.IndexFunc(dep.Spec.Template.Spec.Containers, func(ct corev1.Container) bool { return ct.Name == container })
	if i < 0 {
		t.Fatalf("Deployment %s has no container %s", dep.Name, container)
	}
	ct := dep.Spec.Template.Spec.Containers[i]
	secret := func(name string) map[string][]byte {
		var s corev1.Secret
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: dep.Namespace, Name: name}, &s); err != nil {
			t.Fatalf("Deployment %s: Secret %s: %v", dep.Name, name, err)
		}
		return s.Data
	}
	env := map[string]string{}
	for _, from := range ct.EnvFrom {
		if from.SecretRef == nil {
			t.Fatalf("Deployment %s: envFrom other than a Secret: %+v", dep.Name, from)
		}
		for k, v := range secret(from.SecretRef.Name) {
			env[from.Prefix+k] = string(v)
		}
	}
	for _, e := range ct.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = envRef.ReplaceAllStringFunc(e.Value, func(ref string) string { return env[ref[2:len(ref)-1]] })
		case e.ValueFrom.FieldRef != nil:
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				env[e.Name] = p.name
			case "metadata.namespace":
				env[e.Name] = p.namespace
			case "status.podIP":
				env[e.Name] = p.ip
			default:
				t.Fatalf("Deployment %s: env %s from field %s, which this test does not give", dep.Name, e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = string(secret(e.ValueFrom.SecretKeyRef.Name)[e.ValueFrom.SecretKeyRef.Key])
		default:
			t.Fatalf("Deployment %s: env %s from %+v, which this test does not give", dep.Name, e.Name, e.ValueFrom)
		}
	}
	mounts := map[string]string{}
	for _, m := range ct.VolumeMounts {
		local := filepath.Join(p.dir, m.Name)
		if err := os.MkdirAll(local, 0o700); err != nil {
			t.Fatal(err)
		}
		vi := slices.IndexFunc(dep.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if vi < 0 {
			t.Fatalf("Deployment %s mounts volume %s, which it does not define", dep.Name, m.Name)
		}
		if s := dep.Spec.Template.Spec.Volumes[vi].Secret; s != nil {
			for k, v := range secret(s.SecretName) {
				if err := os.WriteFile(filepath.Join(local, k), v, 0o400); err != nil {
					t.Fatal(err)
				}
			}
		}
		mounts[m.MountPath] = local
	}
	args := make([]string, 0, len(ct.Args))
	for _, a := range append(slices.Clone(ct.Command), ct.Args...) {
		a = envRef.ReplaceAllStringFunc(a, func(ref string) string {
			if v, ok := env[ref[2:len(ref)-1]]; ok {
				return v
			}
			return ref // the kubelet leaves an unknown reference as it is
		})
		name, value, hasValue := strings.Cut(a, "=")
		if hasValue {
			if port, ok := strings.CutPrefix(value, "0.0.0.0:"); ok {
				n, err := strconv.Atoi(port)
				if err != nil || p.ports[int32(n)] == 0 {
					t.Fatalf("Deployment %s: %s listens on %s, not a container port", dep.Name, name, value)
				}
				value = fmt.Sprintf("127.0.0.1:%d", p.ports[int32(n)])
			}
			for mp, local := range mounts {
				if value == mp || strings.HasPrefix(value, mp+"/") {
					value = local + strings.TrimPrefix(value, mp)
				}
			}
			a = name + "=" + value
		}
		if a == "--in-cluster" {
			a = "--kubeconfig=" + p.kubeconfig
		}
		args = append(args, a)
	}
	// readOnlyRootFilesystem: the pod may write only to its volumes. Its HOME and TMPDIR are empty directories here
	// that must stay empty (checkRootUnwritten; permissions cannot say so, as these tests may run as root).
	for _, d := range []string{"home", "tmp"} {
		if err := os.MkdirAll(filepath.Join(p.dir, "root", d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	procEnv := []string{"HOME=" + filepath.Join(p.dir, "root", "home"), "TMPDIR=" + filepath.Join(p.dir, "root", "tmp"), "PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		procEnv = append(procEnv, k+"="+v)
	}
	return args, procEnv
}

// checkRootUnwritten fails t if the process wrote to its HOME or TMPDIR, which its Deployment's
// readOnlyRootFilesystem would have refused.
func (p *pod) checkRootUnwritten(t *testing.T) {
	t.Helper()
	_ = filepath.WalkDir(filepath.Join(p.dir, "root"), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			t.Errorf("pod %s wrote %s outside its volumes (its root filesystem is read-only)", p.name, path)
		}
		return nil
	})
}

// containerPorts gives every port of the Deployment's container a free loopback port.
func containerPorts(t *testing.T, dep *appsv1.Deployment) map[int32]int {
	t.Helper()
	ports := map[int32]int{}
	for _, ct := range dep.Spec.Template.Spec.Containers {
		for _, cp := range ct.Ports {
			if ports[cp.ContainerPort] == 0 {
				ports[cp.ContainerPort] = freePort(t, "127.0.0.1")
			}
		}
	}
	return ports
}

// startWithEnv starts a built binary with a pod's environment, not the test's, and stops it with SIGTERM, as a
// kubelet would.
func startWithEnv(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	return launch(t, name, env, syscall.SIGTERM, args...)
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// poll calls cond every 250ms until it holds or timeout passes; it gives up early when one of procs has exited.
func poll(timeout time.Duration, procs []*proc, cond func() bool) (time.Duration, error) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), nil
		}
		for _, p := range procs {
			if p.exited() {
				return time.Since(start), fmt.Errorf("%s exited", p.name)
			}
		}
		if time.Since(start) > timeout {
			return time.Since(start), fmt.Errorf("not within %v", timeout)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func deploymentOf(t *testing.T, c *envtest.Cluster, namespace, name string) *appsv1.Deployment {
	t.Helper()
	var dep appsv1.Deployment
	if err := c.Client.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, &dep); err != nil {
		t.Fatalf("cluster %s: Deployment %s/%s: %v", c.Name, namespace, name, err)
	}
	return &dep
}

func TestInstallFromREADME(t *testing.T) {
	began := time.Now()
	ctrllog.SetLogger(logr.Discard()) // envtest logs through it; the processes keep their own logs
	kubectl, err := envtest.Kubectl()
	if err != nil {
		t.Fatalf("kubectl: %v", err)
	}
	readme, err := os.ReadFile(filepath.Join(envtest.RepoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	clusters := envtest.StartWithOptions(t, envtest.Options{NoCRDs: true, Collectors: true}, "hub", "east", "west")
	hubC, eastC, westC := clusters[0], clusters[1], clusters[2]
	t.Logf("three API servers up in %v", time.Since(began).Round(time.Millisecond))

	work := t.TempDir()
	if err := os.Symlink(filepath.Join(envtest.RepoRoot(), "deploy"), filepath.Join(work, "deploy")); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(work, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	hubKubeconfig := filepath.Join(work, "hub.kubeconfig")
	writeKubeconfig(t, hubKubeconfig, hubC.Config, "admin")
	writeKubeconfig(t, filepath.Join(work, "east.kubeconfig"), eastC.Config, "admin")
	writeKubeconfig(t, filepath.Join(work, "west.kubeconfig"), westC.Config, "admin")
	e := &installEnv{readme: string(readme), dir: work, env: []string{
		"HOME=" + home, "KUBECONFIG=" + hubKubeconfig,
		"PATH=" + filepath.Dir(kubectl) + ":" + binDir + ":" + os.Getenv("PATH"),
	}}

	// The hub cluster.
	e.run(t, "kubectl apply --server-side -k deploy/crds")
	checkApplied(t, hubC, "kubectl apply -k deploy/crds", kustomize(t, kubectl, "crds"))
	e.run(t, "kubectl apply --server-side -k deploy/hub")
	checkApplied(t, hubC, "kubectl apply -k deploy/hub", kustomize(t, kubectl, "hub"))
	const ns = "fedgate-system"
	hubDep := deploymentOf(t, hubC, ns, "fedgate-hub")
	hubPod := &pod{name: "fedgate-hub-0", namespace: ns, ip: "127.0.0.1", dir: filepath.Join(work, "hub-pod"), ports: containerPorts(t, hubDep)}
	hubPod.kubeconfig = filepath.Join(work, "hub-sa.kubeconfig")
	serviceAccountKubeconfig(t, hubC, ns, hubDep.Spec.Template.Spec.ServiceAccountName, hubPod.kubeconfig)
	args, env := hubPod.command(t, hubC, hubDep, "hub")
	// The embedded etcd's ports are the pod's own; here they must not collide with anything else on the machine.
	args = append(args, "--etcd-client-port=0", "--etcd-peer-port=0")
	t.Logf("hub %s", strings.Join(args, " "))
	hubProc := startWithEnv(t, "hub", env, append([]string{"hub"}, args...)...)
	hubAddr := fmt.Sprintf("127.0.0.1:%d", hubPod.ports[targetPort(t, hubC, hubDep, "fedgate-hub")])

	// The admin credential, from the Secret the hub writes once it is up.
	adminLine := `(umask 077 && mkdir -p ~/.fedgate && kubectl -n fedgate-system get secret fedgate-hub-admin -o jsonpath='{.data.config}' | base64 -d > ~/.fedgate/config)`
	var lastErr error
	if d, err := poll(60*time.Second, []*proc{hubProc}, func() bool {
		_, lastErr = e.try(t, adminLine)
		return lastErr == nil
	}); err != nil {
		t.Fatalf("the admin credential: %v after %v: %v", err, d, lastErr)
	}
	if !strings.Contains(e.readme, "kubectl -n fedgate-system port-forward service/fedgate-hub 9443:9443 &") {
		t.Fatal("README.md no longer says how hubctl reaches the hub (the port-forward)")
	}
	// The port-forward needs a running pod; the hub process listens where it would forward to.
	e.run(t, "export FEDGATE_HUB=127.0.0.1:9443")
	e.setenv("FEDGATE_HUB", hubAddr)

	// Join: east with --install, west with kubectl apply -k deploy/spoke.
	advertise, _ := flagValue(hubDep.Spec.Template.Spec.Containers[0].Args, "advertise-address")
	eastWest := map[string]int{"east": freePort(t, "127.0.0.1"), "west": freePort(t, "127.0.0.1")}
	join := func(cluster string) (token, caHash string) {
		out := e.run(t, "hubctl token create --cluster-name east", "east", cluster)
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) < 2 || f[0] != "hubctl" || f[1] != "join" {
				continue
			}
			for i := 0; i+1 < len(f); i++ {
				switch f[i] {
				case "--token":
					token = f[i+1]
				case "--ca-hash":
					caHash = f[i+1]
				case "--hub":
					if f[i+1] != advertise {
						t.Errorf("the join command names the hub %s, want deploy/hub's --advertise-address %s (README)", f[i+1], advertise)
					}
				}
			}
			return token, caHash
		}
		t.Fatalf("hubctl token create printed no join command:\n%s", out)
		return "", ""
	}
	for _, m := range []struct {
		name string
		c    *envtest.Cluster
	}{{"east", eastC}, {"west", westC}} {
		e.run(t, "kubectl --kubeconfig east.kubeconfig apply --server-side -k deploy/crds", "east", m.name)
		checkApplied(t, m.c, "kubectl apply -k deploy/crds", kustomize(t, kubectl, "crds"))
		token, caHash := join(m.name)
		fill := []string{"HUB:9443", hubAddr, "ID.SECRET", token, "sha256:HEX", caHash}
		if m.name == "east" {
			e.run(t, "hubctl join --hub HUB:9443 --token ID.SECRET --ca-hash sha256:HEX --cluster-name east --kubeconfig east.kubeconfig --east-west-address EAST_WEST:15443 --install",
				append(fill, "EAST_WEST:15443", fmt.Sprintf("127.0.0.1:%d", eastWest["east"]))...)
		} else {
			e.run(t, "hubctl join --hub HUB:9443 --token ID.SECRET --ca-hash sha256:HEX --cluster-name west --kubeconfig west.kubeconfig --east-west-address WEST_EAST_WEST:15443",
				append(fill, "WEST_EAST_WEST:15443", fmt.Sprintf("127.0.0.1:%d", eastWest["west"]))...)
			e.run(t, "kubectl --kubeconfig west.kubeconfig apply --server-side -k deploy/spoke")
		}
		checkApplied(t, m.c, "the spoke's install", kustomize(t, kubectl, "spoke"))
	}

	// The spokes, one replica each, as their ServiceAccount.
	procs := []*proc{hubProc}
	pods := []*pod{hubPod}
	gatewayPorts := map[string]int{}
	for _, m := range []struct {
		name string
		c    *envtest.Cluster
	}{{"east", eastC}, {"west", westC}} {
		dep := deploymentOf(t, m.c, ns, "fedgate-spoke")
		p := &pod{name: "fedgate-spoke-0", namespace: ns, ip: "127.0.0.1", dir: filepath.Join(work, m.name+"-pod"), ports: containerPorts(t, dep)}
		// The east-west port is the one the join advertised for this cluster.
		p.ports[targetPort(t, m.c, dep, "fedgate-east-west")] = eastWest[m.name]
		p.kubeconfig = filepath.Join(work, m.name+"-sa.kubeconfig")
		serviceAccountKubeconfig(t, m.c, ns, dep.Spec.Template.Spec.ServiceAccountName, p.kubeconfig)
		args, env := p.command(t, m.c, dep, "spoke")
		// Gateway listeners bind their port plus the offset: the example Gateway's listener port, which must be the
		// container port the Service fedgate-gateway sends to, lands on gatewayPorts[name].
		gw := targetPort(t, m.c, dep, "fedgate-gateway")
		gatewayPorts[m.name] = freePort(t, "127.0.0.1")
		args = append(args, "--kubeconfig="+p.kubeconfig, "--listen-host=127.0.0.1", fmt.Sprintf("--port-offset=%d", gatewayPorts[m.name]-int(gw)))
		t.Logf("spoke %s: spoke %s", m.name, strings.Join(args, " "))
		procs = append(procs, startWithEnv(t, "spoke-"+m.name, env, append([]string{"spoke"}, args...)...))
		pods = append(pods, p)
	}

	// The example.
	e.run(t, "kubectl --kubeconfig east.kubeconfig apply --server-side -f deploy/examples/member.yaml")
	e.run(t, "kubectl --kubeconfig east.kubeconfig apply --server-side -f deploy/examples/member.yaml", "east.kubeconfig", "west.kubeconfig")
	e.run(t, "kubectl apply --server-side -f deploy/examples/route.yaml")

	var route gatewayv1.HTTPRoute
	var conds []metav1.Condition
	want := []string{"east.clusters.fedgate.io/Accepted", "east.clusters.fedgate.io/Programmed",
		"west.clusters.fedgate.io/Accepted", "west.clusters.fedgate.io/Programmed", "Accepted"}
	d, err := poll(90*time.Second, procs, func() bool {
		out, err := e.try(t, "kubectl get httproute echo -o yaml")
		if err != nil || yaml.Unmarshal([]byte(out), &route) != nil {
			return false
		}
		conds = nil
		for _, p := range route.Status.Parents {
			if p.ControllerName == "fedgate.io/gateway-controller" {
				conds = p.Conditions
			}
		}
		for _, w := range want {
			if !meta.IsStatusConditionTrue(conds, w) {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("route echo in the hub cluster: %v after %v; want %v True:%s", err, d, want, describeConditions(conds))
	}
	t.Logf("route echo in the hub cluster %v after it was applied:%s", d.Round(time.Millisecond), describeConditions(conds))

	out := e.run(t, "kubectl get managedclusters")
	for _, c := range []string{"east", "west"} {
		if !regexp.MustCompile(`(?m)^` + c + `\s`).MatchString(out) {
			t.Errorf("kubectl get managedclusters lists no %s:\n%s", c, out)
		}
	}
	// Each spoke wrote status in its cluster as its ServiceAccount: the GatewayClass is accepted.
	for _, c := range []*envtest.Cluster{eastC, westC} {
		var gc gatewayv1.GatewayClass
		if d, err := poll(30*time.Second, procs, func() bool {
			return c.Client.Get(context.Background(), client.ObjectKey{Name: "fedgate"}, &gc) == nil &&
				meta.IsStatusConditionTrue(gc.Status.Conditions, string(gatewayv1.GatewayClassConditionStatusAccepted))
		}); err != nil {
			t.Errorf("cluster %s: GatewayClass fedgate not Accepted (%v after %v): %+v", c.Name, err, d, gc.Status.Conditions)
		}
	}
	// The example Gateway's listener is the port deploy/spoke's Service sends to: the spoke serves the route there
	// (no echo pods run, so the route's backend has no endpoints: 503), and nothing for another host (404).
	hc := newClient()
	for _, c := range []string{"east", "west"} {
		url := fmt.Sprintf("http://127.0.0.1:%d/", gatewayPorts[c])
		var r result
		if d, err := poll(20*time.Second, procs, func() bool {
			r = get(hc, url, "echo.example.com")
			return r.code == 503
		}); err != nil {
			t.Errorf("cluster %s: GET echo.example.com on the gateway port: %d %v (%v after %v), want 503 (a route with no endpoints)", c, r.code, r.err, err, d)
		}
		if r := get(hc, url, "other.example.com"); r.code != 404 {
			t.Errorf("cluster %s: GET other.example.com on the gateway port: %d %v, want 404", c, r.code, r.err)
		}
	}
	for _, p := range pods {
		p.checkRootUnwritten(t)
	}

	// Removal, as the README says: both agents take back what fedgate wrote and exit saying so; east's, installed with
	// --install, deletes the ClusterRole that owns its installation and the garbage collector the rest; west's is
	// uninstalled with kubectl. Then nothing of fedgate's is left in either member cluster.
	removed := time.Now()
	e.run(t, "hubctl cluster remove east")
	e.run(t, "hubctl cluster remove west")
	if d, err := poll(60*time.Second, []*proc{hubProc}, func() bool { return procs[1].exited() && procs[2].exited() }); err != nil {
		t.Fatalf("the removed clusters' agents still run (%v after %v)", err, d)
	}
	for _, p := range procs[1:] {
		b, _ := os.ReadFile(p.log)
		if !strings.Contains(string(b), "was removed at the hub; what fedgate wrote in this cluster is cleaned up") {
			t.Errorf("%s did not exit saying its cluster was removed and cleaned up:\n%s", p.name, b)
		}
	}
	e.run(t, "kubectl --kubeconfig west.kubeconfig delete -k deploy/spoke")
	installed := kustomize(t, kubectl, "spoke")
	for _, m := range []*envtest.Cluster{eastC, westC} {
		left := fedgateObjects(t, m, installed)
		d, err := poll(90*time.Second, []*proc{hubProc}, func() bool {
			left = fedgateObjects(t, m, installed)
			return len(left) == 0
		})
		if err != nil {
			t.Errorf("cluster %s: %v after the removal (%v), still there: %v", m.Name, err, d, left)
			continue
		}
		t.Logf("cluster %s: no object of fedgate's left %v after the removal", m.Name, time.Since(removed).Round(time.Millisecond))
		checkNothingOfFedgate(t, context.Background(), m)
	}
	t.Logf("whole test: %v", time.Since(began).Round(time.Millisecond))
}

// fedgateObjects lists what of fedgate's is still in cluster c: the objects of the spoke's installation (the
// rendered base, namespace included), the credentials Secret, the leader-election Lease and fedgate's ServiceImports.
func fedgateObjects(t *testing.T, c *envtest.Cluster, installed []*unstructured.Unstructured) []string {
	t.Helper()
	ctx := context.Background()
	objs := slices.Clone(installed)
	for _, k := range []struct{ apiVersion, kind, name string }{
		{"v1", "Secret", hubctlapp.CredentialsSecret}, {"coordination.k8s.io/v1", "Lease", leader.DefaultLeaseName},
	} {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion(k.apiVersion)
		u.SetKind(k.kind)
		u.SetNamespace(hubctlapp.DefaultNamespace)
		u.SetName(k.name)
		objs = append(objs, u)
	}
	var left []string
	for _, o := range objs {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(o.GroupVersionKind())
		err := c.Client.Get(ctx, client.ObjectKeyFromObject(o), u)
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			left = append(left, fmt.Sprintf("%s %s (%v)", o.GetKind(), o.GetName(), err))
		default:
			left = append(left, o.GetKind()+" "+o.GetName())
		}
	}
	var imports mcsv1a1.ServiceImportList
	if err := c.Client.List(ctx, &imports, client.MatchingLabels{kstatus.ManagedByLabel: kstatus.ManagedByValue}); err != nil {
		left = append(left, fmt.Sprintf("ServiceImports (%v)", err))
	}
	for _, i := range imports.Items {
		left = append(left, "ServiceImport "+i.Namespace+"/"+i.Name)
	}
	return left
}

// targetPort is the container port of dep that the first port of Service namespace/name sends to.
func targetPort(t *testing.T, c *envtest.Cluster, dep *appsv1.Deployment, name string) int32 {
	t.Helper()
	var svc corev1.Service
	if err := c.Client.Get(context.Background(), client.ObjectKey{Namespace: dep.Namespace, Name: name}, &svc); err != nil {
		t.Fatalf("cluster %s: Service %s: %v", c.Name, name, err)
	}
	target := svc.Spec.Ports[0].TargetPort
	if target.IntVal != 0 {
		return target.IntVal
	}
	for _, ct := range dep.Spec.Template.Spec.Containers {
		for _, p := range ct.Ports {
			if p.Name == target.StrVal {
				return p.ContainerPort
			}
		}
	}
	t.Fatalf("cluster %s: Service %s targets port %q, which Deployment %s does not name", c.Name, name, target.StrVal, dep.Name)
	return 0
}

// flagValue returns the value of --name=value in args.
func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}
