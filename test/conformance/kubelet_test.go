package conformance

// kubelet stands in for the kubelet of one Node, since no container runs in envtest: it creates the Node, binds every
// unscheduled Pod to it, gives each a distinct non-loopback pod IP (10.244.x.y, never dialed: addrMap maps each pod
// IP:port it serves onto a loopback port), runs one echo-basic process per conformance echo container — built from the
// conformance module, with the env the pod spec gives (POD_NAME, NAMESPACE, ... from fieldRefs; secret and configMap
// volumes written to a directory and the paths rewritten) and its ports moved to free ones — and marks the Pod
// Running and Ready once the process accepts connections. kube-controller-manager's deployment, replicaset and
// endpointslice controllers do the rest (Deployment → Pods, Service → EndpointSlices). A Pod being deleted has its
// process stopped and is then deleted for good, as a kubelet does.
//
// Containers that are not echo-basic (the coredns of the UDPRoute tests, outside the profiles run here) are marked
// Ready without running anything.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

const (
	nodeName = "fedgate-conformance-node"
	nodeIP   = "10.244.0.1"
)

type kubelet struct {
	cs      kubernetes.Interface
	echoBin string
	dir     string
	addrs   *addrMap
	logf    func(format string, args ...any)

	mu     sync.Mutex
	pods   map[types.UID]*podRun
	nextIP int

	lastTry map[types.UID]time.Time // sync's own
	lastErr map[types.UID]string
}

// podRun is what the kubelet runs for one Pod.
type podRun struct {
	ns, name string
	ip       string
	mapped   []string // addrMap keys
	procs    []*exec.Cmd
	done     []chan struct{}
	ready    bool // status written Running/Ready
	logPath  string
}

func newKubelet(cs kubernetes.Interface, echoBin, dir string, addrs *addrMap, logf func(string, ...any)) *kubelet {
	return &kubelet{cs: cs, echoBin: echoBin, dir: dir, addrs: addrs, logf: logf, pods: map[types.UID]*podRun{},
		lastTry: map[types.UID]time.Time{}, lastErr: map[types.UID]string{}}
}

// run creates the Node and syncs Pods every 200ms until ctx ends, then stops every process.
func (k *kubelet) run(ctx context.Context) error {
	if err := k.createNode(ctx); err != nil {
		return err
	}
	defer k.stopAll()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := k.sync(ctx); err != nil && ctx.Err() == nil {
			k.logf("kubelet: sync: %v", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (k *kubelet) createNode(ctx context.Context) error {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, Labels: map[string]string{"kubernetes.io/hostname": nodeName}}}
	n, err := k.cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating node: %w", err)
	}
	now := metav1.Now()
	n.Status = corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "fedgate conformance stand-in kubelet", LastHeartbeatTime: now, LastTransitionTime: now}},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeIP}, {Type: corev1.NodeHostName, Address: nodeName}},
		Capacity: corev1.ResourceList{corev1.ResourceCPU: resourceQuantity("64"), corev1.ResourceMemory: resourceQuantity("256Gi"),
			corev1.ResourcePods: resourceQuantity("1000")},
		NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "fedgate-stand-in", OperatingSystem: "linux", Architecture: "amd64"},
	}
	n.Status.Allocatable = n.Status.Capacity
	if _, err := k.cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("node status: %w", err)
	}
	return nil
}

func (k *kubelet) sync(ctx context.Context) error {
	list, err := k.cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	seen := map[types.UID]bool{}
	for i := range list.Items {
		p := &list.Items[i]
		seen[p.UID] = true
		switch {
		case p.DeletionTimestamp != nil:
			k.stop(p.UID)
			err := k.cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{
				GracePeriodSeconds: ptr.To[int64](0), Preconditions: &metav1.Preconditions{UID: &p.UID}})
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				k.logf("kubelet: deleting pod %s/%s: %v", p.Namespace, p.Name, err)
			}
		case p.Spec.NodeName == "":
			b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, UID: p.UID},
				Target: corev1.ObjectReference{Kind: "Node", Name: nodeName}}
			if err := k.cs.CoreV1().Pods(p.Namespace).Bind(ctx, b, metav1.CreateOptions{}); err != nil && !apierrors.IsConflict(err) {
				k.logf("kubelet: binding pod %s/%s: %v", p.Namespace, p.Name, err)
			}
		case p.Spec.NodeName == nodeName:
			k.mu.Lock()
			r := k.pods[p.UID]
			k.mu.Unlock()
			if r == nil {
				// A Pod that could not start (a volume's Secret not there yet, as with a real kubelet's
				// ContainerCreating) is tried again every second; each new error is logged once.
				if time.Since(k.lastTry[p.UID]) < time.Second {
					continue
				}
				k.lastTry[p.UID] = time.Now()
				if err := k.start(ctx, p); err != nil {
					k.stop(p.UID)
					if msg := err.Error(); k.lastErr[p.UID] != msg {
						k.lastErr[p.UID] = msg
						k.logf("kubelet: starting pod %s/%s (tried again every second): %v", p.Namespace, p.Name, err)
					}
				}
			} else if !r.ready {
				k.markReady(ctx, p, r)
			}
		}
	}
	k.mu.Lock()
	var gone []types.UID
	for uid := range k.pods {
		if !seen[uid] {
			gone = append(gone, uid)
		}
	}
	k.mu.Unlock()
	for _, uid := range gone {
		k.stop(uid)
	}
	return nil
}

// echo-basic's listening ports by mode: env var → the container port it defaults to.
var echoPorts = map[string][][2]string{
	"http": {{"HTTP_PORT", "3000"}, {"H2C_PORT", "3001"}, {"HTTPS_PORT", "8443"}},
	"grpc": {{"HTTP_PORT", "3000"}, {"HTTPS_PORT", "8443"}},
	"tcp":  {{"TCP_PORT", "3000"}, {"TLS_PORT", "8443"}},
}

func (k *kubelet) start(ctx context.Context, p *corev1.Pod) error {
	k.mu.Lock()
	k.nextIP++
	n := k.nextIP
	k.mu.Unlock()
	r := &podRun{ns: p.Namespace, name: p.Name, ip: fmt.Sprintf("10.244.%d.%d", 1+n/250, 2+n%250)}
	dir := filepath.Join(k.dir, p.Namespace+"_"+p.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	r.logPath = filepath.Join(dir, "log")
	k.mu.Lock()
	k.pods[p.UID] = r
	k.mu.Unlock()
	for _, c := range p.Spec.Containers {
		if !strings.Contains(c.Image, "gateway-api/echo-basic") {
			k.logf("kubelet: pod %s/%s container %s (%s) is not echo-basic: marked ready, nothing runs", p.Namespace, p.Name, c.Name, c.Image)
			continue
		}
		if err := k.runEcho(ctx, p, c, r, dir); err != nil {
			return fmt.Errorf("container %s: %w", c.Name, err)
		}
	}
	k.markReady(ctx, p, r)
	return nil
}

func (k *kubelet) runEcho(ctx context.Context, p *corev1.Pod, c corev1.Container, r *podRun, dir string) error {
	mounts, err := k.volumes(ctx, p, c, dir)
	if err != nil {
		return err
	}
	env := map[string]string{}
	var order []string
	for _, e := range c.Env {
		v, err := k.envValue(ctx, p, r, e)
		if err != nil {
			return fmt.Errorf("env %s: %w", e.Name, err)
		}
		for mountPath, hostDir := range mounts {
			if strings.HasPrefix(v, mountPath+"/") {
				v = hostDir + strings.TrimPrefix(v, mountPath)
			}
		}
		if _, ok := env[e.Name]; !ok {
			order = append(order, e.Name)
		}
		env[e.Name] = v
	}
	mode := "http"
	switch {
	case env["GRPC_ECHO_SERVER"] != "":
		mode = "grpc"
	case env["TCP_ECHO_SERVER"] != "":
		mode = "tcp"
	case env["UDP_ECHO_SERVER"] != "":
		k.logf("kubelet: pod %s/%s runs a UDP echo server: not run (UDP is outside the profiles run here)", p.Namespace, p.Name)
		return nil
	}
	var firstPort string
	for _, pe := range echoPorts[mode] {
		containerPort := pe[1]
		if v := env[pe[0]]; v != "" {
			containerPort = v
		}
		port, err := freePort()
		if err != nil {
			return err
		}
		if _, ok := env[pe[0]]; !ok {
			order = append(order, pe[0])
		}
		env[pe[0]] = strconv.Itoa(port)
		from, to := net.JoinHostPort(r.ip, containerPort), net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		k.addrs.set(from, to)
		r.mapped = append(r.mapped, from)
		if firstPort == "" {
			firstPort = to
		}
	}
	logf, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(k.echoBin)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	for _, name := range order {
		cmd.Env = append(cmd.Env, name+"="+env[name])
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		logf.Close()
		select {
		case <-ctx.Done():
		default:
			if err != nil && !strings.Contains(err.Error(), "signal: killed") {
				k.logf("kubelet: echo-basic of pod %s/%s exited: %v", p.Namespace, p.Name, err)
			}
		}
		close(done)
	}()
	r.procs = append(r.procs, cmd)
	r.done = append(r.done, done)
	// Ready once it accepts connections on its first port (a readiness probe).
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", firstPort, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("echo-basic never listened on %s: %w", firstPort, err)
		}
		select {
		case <-done:
			return fmt.Errorf("echo-basic exited before listening (log %s)", r.logPath)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// volumes writes the container's secret and configMap volumes under dir and returns mountPath → directory.
func (k *kubelet) volumes(ctx context.Context, p *corev1.Pod, c corev1.Container, dir string) (map[string]string, error) {
	out := map[string]string{}
	for _, vm := range c.VolumeMounts {
		for _, v := range p.Spec.Volumes {
			if v.Name != vm.Name {
				continue
			}
			data := map[string][]byte{}
			var items []corev1.KeyToPath
			switch {
			case v.Secret != nil:
				s, err := k.cs.CoreV1().Secrets(p.Namespace).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
				if err != nil {
					return nil, fmt.Errorf("volume %s: %w", v.Name, err)
				}
				data, items = s.Data, v.Secret.Items
			case v.ConfigMap != nil:
				cm, err := k.cs.CoreV1().ConfigMaps(p.Namespace).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
				if err != nil {
					return nil, fmt.Errorf("volume %s: %w", v.Name, err)
				}
				for key, val := range cm.Data {
					data[key] = []byte(val)
				}
				items = v.ConfigMap.Items
			default:
				continue
			}
			vdir := filepath.Join(dir, "volumes", v.Name)
			if err := os.MkdirAll(vdir, 0o755); err != nil {
				return nil, err
			}
			if len(items) == 0 {
				for key := range data {
					items = append(items, corev1.KeyToPath{Key: key, Path: key})
				}
			}
			for _, it := range items {
				f := filepath.Join(vdir, it.Path)
				if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
					return nil, err
				}
				if err := os.WriteFile(f, data[it.Key], 0o600); err != nil {
					return nil, err
				}
			}
			out[strings.TrimSuffix(vm.MountPath, "/")] = vdir
		}
	}
	return out, nil
}

func (k *kubelet) envValue(ctx context.Context, p *corev1.Pod, r *podRun, e corev1.EnvVar) (string, error) {
	if e.ValueFrom == nil {
		return e.Value, nil
	}
	switch {
	case e.ValueFrom.FieldRef != nil:
		switch e.ValueFrom.FieldRef.FieldPath {
		case "metadata.name":
			return p.Name, nil
		case "metadata.namespace":
			return p.Namespace, nil
		case "metadata.uid":
			return string(p.UID), nil
		case "spec.nodeName":
			return nodeName, nil
		case "spec.serviceAccountName":
			return p.Spec.ServiceAccountName, nil
		case "status.podIP":
			return r.ip, nil
		case "status.hostIP":
			return nodeIP, nil
		}
		return "", fmt.Errorf("fieldRef %s is not supported by the stand-in kubelet", e.ValueFrom.FieldRef.FieldPath)
	case e.ValueFrom.SecretKeyRef != nil:
		s, err := k.cs.CoreV1().Secrets(p.Namespace).Get(ctx, e.ValueFrom.SecretKeyRef.Name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		return string(s.Data[e.ValueFrom.SecretKeyRef.Key]), nil
	case e.ValueFrom.ConfigMapKeyRef != nil:
		cm, err := k.cs.CoreV1().ConfigMaps(p.Namespace).Get(ctx, e.ValueFrom.ConfigMapKeyRef.Name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		return cm.Data[e.ValueFrom.ConfigMapKeyRef.Key], nil
	}
	return "", fmt.Errorf("valueFrom not supported by the stand-in kubelet")
}

// markReady writes the Pod's status: Running, Ready, with its pod IP.
func (k *kubelet) markReady(ctx context.Context, p *corev1.Pod, r *podRun) {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := k.cs.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != p.UID || cur.DeletionTimestamp != nil {
			return nil
		}
		now := metav1.Now()
		cond := func(t corev1.PodConditionType) corev1.PodCondition {
			return corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now}
		}
		cur.Status.Phase = corev1.PodRunning
		cur.Status.HostIP = nodeIP
		cur.Status.HostIPs = []corev1.HostIP{{IP: nodeIP}}
		cur.Status.PodIP = r.ip
		cur.Status.PodIPs = []corev1.PodIP{{IP: r.ip}}
		cur.Status.StartTime = &now
		cur.Status.Conditions = []corev1.PodCondition{cond(corev1.PodScheduled), cond(corev1.PodInitialized),
			cond(corev1.ContainersReady), cond(corev1.PodReady)}
		cur.Status.ContainerStatuses = nil
		for _, c := range cur.Spec.Containers {
			cur.Status.ContainerStatuses = append(cur.Status.ContainerStatuses, corev1.ContainerStatus{
				Name: c.Name, Image: c.Image, ImageID: "fedgate-stand-in://" + c.Image, ContainerID: "fedgate-stand-in://" + string(p.UID) + "/" + c.Name,
				Ready: true, Started: ptr.To(true), State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
			})
		}
		_, err = k.cs.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		if !apierrors.IsNotFound(err) {
			k.logf("kubelet: pod %s/%s status: %v", p.Namespace, p.Name, err)
		}
		return
	}
	k.mu.Lock()
	r.ready = true
	k.mu.Unlock()
}

func (k *kubelet) stop(uid types.UID) {
	k.mu.Lock()
	r := k.pods[uid]
	delete(k.pods, uid)
	k.mu.Unlock()
	if r == nil {
		return
	}
	for _, m := range r.mapped {
		k.addrs.remove(m)
	}
	for i, c := range r.procs {
		_ = c.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done[i]:
		case <-time.After(5 * time.Second):
			_ = c.Process.Kill()
			<-r.done[i]
		}
	}
}

func (k *kubelet) stopAll() {
	k.mu.Lock()
	var uids []types.UID
	for uid := range k.pods {
		uids = append(uids, uid)
	}
	k.mu.Unlock()
	for _, uid := range uids {
		k.stop(uid)
	}
}

// freePort is a TCP port free on every interface (echo-basic listens on all of them).
func freePort() (int, error) {
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func resourceQuantity(s string) resource.Quantity { return resource.MustParse(s) }
