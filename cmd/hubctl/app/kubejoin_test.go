package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fedgate/fedgate/apis/identity"
	"github.com/fedgate/fedgate/hub/registration"
	"github.com/fedgate/fedgate/hub/server"
	"github.com/fedgate/fedgate/spoke/credentials"
	"github.com/fedgate/fedgate/test/envtest"
)

// writeKubeconfig writes a kubeconfig file for rc (envtest's admin: client certificate or token).
func writeKubeconfig(t *testing.T, rc *rest.Config) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["envtest"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: rc.CAData}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: rc.CertData, ClientKeyData: rc.KeyData, Token: rc.BearerToken}
	cfg.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	cfg.CurrentContext = "envtest"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func startRealHub(t *testing.T) *server.Hub {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = filepath.Join(t.TempDir(), "hub-data")
	cfg.ShutdownGrace = time.Second
	h, err := server.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("starting the hub: %v", err)
	}
	t.Cleanup(h.Close)
	return h
}

func tokenLeft(t *testing.T, h *server.Hub, id string) int32 {
	t.Helper()
	toks, err := h.Registration().ListTokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range toks {
		if tk.GetId() == id {
			return tk.GetUsagesLeft()
		}
	}
	return 0
}

// hubctl join --kubeconfig puts working credentials into the member cluster's Secret — the files the spoke reads from
// its mount, and the environment the Deployment takes with envFrom — checks the cluster before spending the token,
// and replaces the whole Secret on a re-join.
func TestJoinIntoKubernetesSecret(t *testing.T) {
	ctx := context.Background()
	member := envtest.StartWithOptions(t, envtest.Options{NoCRDs: true}, "member")[0]
	kubeconfig := writeKubeconfig(t, member.Config)
	h := startRealHub(t)
	hubAddr := h.AdvertiseAddress()
	caHash := h.CA().ActiveHash()
	newToken := func() identity.Token {
		// Rejoin: the test joins east again and again (a rejoin token admits a first join too).
		tok, _, err := h.Registration().CreateToken(ctx, registration.TokenOptions{TTL: time.Hour, ClusterName: "east", Rejoin: true, Description: "hubctl test"})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	// An unreachable cluster fails the command before the token is sent: its usage is still there.
	bad := filepath.Join(t.TempDir(), "bad-kubeconfig")
	b, _ := os.ReadFile(kubeconfig)
	if err := os.WriteFile(bad, []byte(strings.ReplaceAll(string(b), member.Config.Host, "https://127.0.0.1:1")), 0o600); err != nil {
		t.Fatal(err)
	}
	tok := newToken()
	_, stderr, code := hubctl(t, "", "join", "--hub", hubAddr, "--token", tok.String(), "--ca-hash", caHash,
		"--cluster-name", "east", "--kubeconfig", bad, "--timeout", "5s")
	if code == 0 || !strings.Contains(stderr, "--kubeconfig "+bad) {
		t.Fatalf("join with an unreachable cluster: exit %d, stderr %q; want a failure naming --kubeconfig", code, stderr)
	}
	if left := tokenLeft(t, h, tok.ID); left != 1 {
		t.Fatalf("token usages left after the failed join = %d, want 1 (the token must not be spent)", left)
	}
	if _, stderr, code := hubctl(t, "", "join", "--hub", hubAddr, "--token", tok.String(), "--ca-hash", caHash,
		"--cluster-name", "east", "--kubeconfig", kubeconfig, "--out", t.TempDir()); code == 0 || !strings.Contains(stderr, "give one") {
		t.Fatalf("--out with --kubeconfig: exit %d, stderr %q", code, stderr)
	}

	stdout, stderr, code := hubctl(t, "", "join", "--hub", hubAddr, "--token", tok.String(), "--ca-hash", caHash,
		"--cluster-name", "east", "--east-west-address", "10.0.0.7:15443", "--kubeconfig", kubeconfig)
	if code != 0 {
		t.Fatalf("hubctl join --kubeconfig: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "Secret fedgate-system/fedgate-spoke-credentials") || strings.Contains(stdout, "PRIVATE KEY") {
		t.Errorf("join output should name the Secret and hold no key:\n%s", stdout)
	}
	sec := readSecret(t, member.Client, "fedgate-system")
	checkCredentials(t, sec, "east")
	for k, want := range map[string]string{SecretKeyHub: hubAddr, SecretKeyCluster: "east", SecretKeyEastWestAddress: "10.0.0.7:15443"} {
		if got := string(sec.Data[k]); got != want {
			t.Errorf("Secret key %s = %q, want %q", k, got, want)
		}
	}
	firstCert := string(sec.Data[SecretKeyTLSCert])

	// A re-join with a new token replaces the data whole: no stale east-west address.
	tok2 := newToken()
	if stdout, stderr, code := hubctl(t, "", "join", "--hub", hubAddr, "--token", tok2.String(), "--ca-hash", caHash,
		"--cluster-name", "east", "--kubeconfig", kubeconfig); code != 0 {
		t.Fatalf("re-join: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	sec = readSecret(t, member.Client, "fedgate-system")
	checkCredentials(t, sec, "east")
	if string(sec.Data[SecretKeyTLSCert]) == firstCert {
		t.Error("re-join left the old certificate in the Secret")
	}
	if _, ok := sec.Data[SecretKeyEastWestAddress]; ok {
		t.Errorf("re-join without --east-west-address kept the stale %s", SecretKeyEastWestAddress)
	}

	// --install applies the spoke (embedded deploy/spoke) into another namespace with the given image, and reads its
	// credentials from the Secret written beside it.
	tok3 := newToken()
	stdout, stderr, code = hubctl(t, "", "join", "--hub", hubAddr, "--token", tok3.String(), "--ca-hash", caHash,
		"--cluster-name", "east", "--kubeconfig", kubeconfig, "--namespace", "edge", "--install", "--image", "registry.example/fedgate/spoke:v1")
	if code != 0 {
		t.Fatalf("join --install: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "deployment/fedgate-spoke serverside-applied") {
		t.Errorf("join --install output:\n%s", stdout)
	}
	checkCredentials(t, readSecret(t, member.Client, "edge"), "east")
	var dep appsv1.Deployment
	if err := member.Client.Get(ctx, client.ObjectKey{Namespace: "edge", Name: "fedgate-spoke"}, &dep); err != nil {
		t.Fatalf("the spoke Deployment was not installed: %v", err)
	}
	ct := dep.Spec.Template.Spec.Containers[0]
	if ct.Image != "registry.example/fedgate/spoke:v1" || !slices.Contains(ct.Args, "--kubernetes") ||
		!slices.Contains(ct.Args, "--credentials-secret=$(POD_NAMESPACE)/"+CredentialsSecret) {
		t.Errorf("installed Deployment: image %q args %v, want the credentials read from %s in the pod's namespace", ct.Image, ct.Args, CredentialsSecret)
	}
	var rb rbacv1.RoleBinding
	if err := member.Client.Get(ctx, client.ObjectKey{Namespace: "edge", Name: "fedgate-spoke-credentials"}, &rb); err != nil || rb.Subjects[0].Namespace != "edge" {
		t.Errorf("the credentials RoleBinding in edge: %+v %v", rb.Subjects, err)
	}
	var crb rbacv1.ClusterRoleBinding
	if err := member.Client.Get(ctx, client.ObjectKey{Name: "fedgate-spoke"}, &crb); err != nil {
		t.Fatal(err)
	}
	if crb.Subjects[0].Namespace != "edge" {
		t.Errorf("ClusterRoleBinding subject namespace %q, want edge", crb.Subjects[0].Namespace)
	}
	// The installation can take itself out: the agent is told which ClusterRole owns it, and that ClusterRole owns
	// every other object applied, the namespace hubctl created included.
	if !slices.Contains(ct.Args, "--install-owner="+SpokeClusterRole) {
		t.Errorf("installed Deployment args %v, want --install-owner=%s", ct.Args, SpokeClusterRole)
	}
	var owner rbacv1.ClusterRole
	if err := member.Client.Get(ctx, client.ObjectKey{Name: SpokeClusterRole}, &owner); err != nil {
		t.Fatal(err)
	}
	owned := func(o client.Object) bool {
		refs := o.GetOwnerReferences()
		return len(refs) == 1 && refs[0].Kind == "ClusterRole" && refs[0].Name == SpokeClusterRole && refs[0].UID == owner.UID
	}
	var edgeNS corev1.Namespace
	if err := member.Client.Get(ctx, client.ObjectKey{Name: "edge"}, &edgeNS); err != nil {
		t.Fatal(err)
	}
	for _, o := range []client.Object{&dep, &rb, &crb, &edgeNS, readSecret(t, member.Client, "edge")} {
		if !owned(o) {
			t.Errorf("%T %s: owner references %+v, want the ClusterRole %s (%s)", o, o.GetName(), o.GetOwnerReferences(), SpokeClusterRole, owner.UID)
		}
	}
	// The namespace a join without --install made (fedgate-system, above) stays out of a later installation there.
	if stdout, stderr, code := hubctl(t, "", "join", "--hub", hubAddr, "--token", newToken().String(), "--ca-hash", caHash,
		"--cluster-name", "east", "--kubeconfig", kubeconfig, "--install"); code != 0 {
		t.Fatalf("join --install into fedgate-system: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	var fsNS corev1.Namespace
	if err := member.Client.Get(ctx, client.ObjectKey{Name: "fedgate-system"}, &fsNS); err != nil {
		t.Fatal(err)
	}
	if len(fsNS.OwnerReferences) != 0 {
		t.Errorf("namespace fedgate-system, made by a join without --install, is owned by the installation: %+v", fsNS.OwnerReferences)
	}
	// A namespace that was there before, not made by hubctl, stays out of the installation.
	if err := member.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shared"}}); err != nil {
		t.Fatal(err)
	}
	if stdout, stderr, code := hubctl(t, "", "join", "--hub", hubAddr, "--token", newToken().String(), "--ca-hash", caHash,
		"--cluster-name", "east", "--kubeconfig", kubeconfig, "--namespace", "shared", "--install"); code != 0 {
		t.Fatalf("join --install into an existing namespace: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	var shared corev1.Namespace
	if err := member.Client.Get(ctx, client.ObjectKey{Name: "shared"}, &shared); err != nil {
		t.Fatal(err)
	}
	var sharedDep appsv1.Deployment
	if err := member.Client.Get(ctx, client.ObjectKey{Namespace: "shared", Name: "fedgate-spoke"}, &sharedDep); err != nil {
		t.Fatal(err)
	}
	if len(shared.OwnerReferences) != 0 || shared.Labels[managedByLabel] != "" || !owned(&sharedDep) {
		t.Errorf("existing namespace shared: owners %+v labels %v (want none), its Deployment's owners %+v (want the ClusterRole)",
			shared.OwnerReferences, shared.Labels, sharedDep.OwnerReferences)
	}
	if _, stderr, code := hubctl(t, "", "join", "--hub", hubAddr, "--token", newToken().String(), "--ca-hash", caHash,
		"--cluster-name", "east", "--install"); code == 0 || !strings.Contains(stderr, "--install needs --kubeconfig") {
		t.Errorf("--install without --kubeconfig: exit %d, stderr %q", code, stderr)
	}
}

func readSecret(t *testing.T, c client.Client, ns string) *corev1.Secret {
	t.Helper()
	var sec corev1.Secret
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: CredentialsSecret}, &sec); err != nil {
		t.Fatalf("reading Secret %s/%s: %v", ns, CredentialsSecret, err)
	}
	return &sec
}

// checkCredentials holds the Secret to what a spoke needs: a key matching a certificate for cluster that the CA bundle
// verifies, readable by credentials.Load from the files the Secret's volume mount would create.
func checkCredentials(t *testing.T, sec *corev1.Secret, cluster string) {
	t.Helper()
	dir := t.TempDir()
	for _, k := range []string{SecretKeyTLSKey, SecretKeyTLSCert, SecretKeyCA} {
		if len(sec.Data[k]) == 0 {
			t.Fatalf("Secret lacks %s", k)
		}
		if err := os.WriteFile(filepath.Join(dir, k), sec.Data[k], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tls.X509KeyPair(sec.Data[SecretKeyTLSCert], sec.Data[SecretKeyTLSKey]); err != nil {
		t.Fatalf("tls.key does not match tls.crt: %v", err)
	}
	blk, _ := pem.Decode(sec.Data[SecretKeyTLSCert])
	if blk == nil {
		t.Fatal("tls.crt is not PEM")
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(sec.Data[SecretKeyCA]) {
		t.Fatal("ca.crt holds no certificate")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("ca.crt does not verify tls.crt: %v", err)
	}
	store, err := credentials.Load(dir)
	if err != nil {
		t.Fatalf("the spoke cannot load the Secret's files: %v", err)
	}
	if store.Cluster() != cluster {
		t.Errorf("credentials are for cluster %q, want %q", store.Cluster(), cluster)
	}
}
