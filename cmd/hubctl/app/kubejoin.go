package app

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/identity"
	"github.com/fedgate/fedgate/deploy"
	"github.com/fedgate/fedgate/internal/version"
	"github.com/fedgate/fedgate/spoke/credentials"
	"github.com/fedgate/fedgate/spoke/join"
)

// The Secret `hubctl join --kubeconfig` writes. deploy/spoke mounts it as the credentials directory (the three PEM
// keys are the file names spoke --credentials-dir reads) and takes the FEDGATE_* keys as environment (envFrom).
const (
	CredentialsSecret = "fedgate-spoke-credentials"
	DefaultNamespace  = "fedgate-system"

	SecretKeyTLSKey          = "tls.key"
	SecretKeyTLSCert         = "tls.crt"
	SecretKeyCA              = "ca.crt"
	SecretKeyHub             = "FEDGATE_HUB"
	SecretKeyCluster         = "FEDGATE_CLUSTER"
	SecretKeyEastWestAddress = "FEDGATE_EAST_WEST_ADDRESS"
)

// kubeJoin joins like join.Run, but the cluster's key never touches this machine's disk: it goes, with the
// certificate and CA bundle, straight into the member cluster's Secret. The cluster is checked before the token is
// spent, so a wrong kubeconfig or missing permission costs no token usage.
func kubeJoin(ctx context.Context, o join.Options, kubeconfig, namespace string) (*fedgatepb.JoinResponse, error) {
	if err := identity.ValidateCAHash(o.CAHash); err != nil {
		return nil, err
	}
	if _, err := identity.ParseToken(o.Token); err != nil {
		return nil, err
	}
	if err := identity.ValidateClusterName(o.ClusterName); err != nil {
		return nil, err
	}
	c, err := kubeClient(kubeconfig)
	if err != nil {
		return nil, err
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	key := client.ObjectKey{Namespace: namespace, Name: CredentialsSecret}
	if err := c.Get(ctx, key, &corev1.Secret{}); err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("--kubeconfig %s: reading Secret %s/%s: %w", kubeconfig, namespace, CredentialsSecret, err)
	}

	keyPEM, csrPEM, err := credentials.NewKeyAndCSR(o.ClusterName)
	if err != nil {
		return nil, err
	}
	resp, err := join.Register(ctx, o, csrPEM)
	if err != nil {
		return nil, err
	}
	data := map[string][]byte{
		SecretKeyTLSKey:  keyPEM,
		SecretKeyTLSCert: resp.CertificatePem,
		SecretKeyCA:      resp.CaBundlePem,
		SecretKeyHub:     []byte(o.Hub),
		SecretKeyCluster: []byte(o.ClusterName),
	}
	if o.EastWestAddress != "" {
		data[SecretKeyEastWestAddress] = []byte(o.EastWestAddress)
	}
	if err := writeCredentialsSecret(ctx, c, namespace, data); err != nil {
		// The cluster joined: say so, or the operator would retry with a token that may be spent.
		return resp, fmt.Errorf("cluster %s joined the hub, but its credentials could not be stored (join again with a new token): %w", o.ClusterName, err)
	}
	return resp, nil
}

func kubeClient(kubeconfig string) (client.Client, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
	}
	s := k8sruntime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		return nil, err
	}
	c, err := client.New(rc, client.Options{Scheme: s})
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
	}
	return c, nil
}

// writeCredentialsSecret creates the namespace if it is missing (the spoke's kustomization creates it too; whichever
// runs first wins) and creates or replaces the Secret's data.
func writeCredentialsSecret(ctx context.Context, c client.Client, namespace string, data map[string][]byte) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", namespace, err)
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace, Name: CredentialsSecret,
			Labels: map[string]string{"app.kubernetes.io/name": "fedgate-spoke", "app.kubernetes.io/managed-by": "hubctl"},
		},
		Type: corev1.SecretTypeOpaque,
		Data: data,
	}
	err := c.Create(ctx, sec)
	if !apierrors.IsAlreadyExists(err) {
		if err != nil {
			return fmt.Errorf("creating Secret %s/%s: %w", namespace, CredentialsSecret, err)
		}
		return nil
	}
	var cur corev1.Secret
	if err := c.Get(ctx, client.ObjectKeyFromObject(sec), &cur); err != nil {
		return fmt.Errorf("reading Secret %s/%s: %w", namespace, CredentialsSecret, err)
	}
	// Replace the data whole: a key left from an earlier join (say an east-west address no longer given) would be stale.
	cur.Data, cur.StringData = data, nil
	if cur.Labels == nil {
		cur.Labels = map[string]string{}
	}
	for k, v := range sec.Labels {
		cur.Labels[k] = v
	}
	if err := c.Update(ctx, &cur); err != nil {
		return fmt.Errorf("updating Secret %s/%s: %w", namespace, CredentialsSecret, err)
	}
	return nil
}

var errOutAndKubeconfig = errors.New("--out and --kubeconfig: give one (credentials go to a directory or to a Secret)")

// DefaultSpokeImage is the spoke image `hubctl join --install` deploys unless --image says otherwise: the one
// `make images` built with this hubctl (fedgate/spoke:VERSION), or fedgate/spoke:dev for an unstamped hubctl.
var DefaultSpokeImage = version.Image("spoke", version.ImageTag())

// installSpoke applies the spoke base of deploy/ (embedded in hubctl) to the cluster with server-side apply, in
// namespace, with image: the agent then starts from the credentials Secret kubeJoin wrote. Re-running it converges.
func installSpoke(ctx context.Context, kubeconfig, namespace, image string) ([]string, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
	}
	c, err := client.New(rc, client.Options{})
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
	}
	objs, err := deploy.Render(deploy.FS, "spoke")
	if err != nil {
		return nil, fmt.Errorf("spoke manifests: %w", err)
	}
	var applied []string
	for _, u := range objs {
		switch u.GetKind() {
		case "Namespace":
			u.SetName(namespace)
		case "ClusterRoleBinding", "RoleBinding":
			subjects, _, _ := unstructured.NestedSlice(u.Object, "subjects")
			for _, s := range subjects {
				if m, ok := s.(map[string]any); ok && m["kind"] == "ServiceAccount" {
					m["namespace"] = namespace
				}
			}
			_ = unstructured.SetNestedSlice(u.Object, subjects, "subjects")
		case "Deployment":
			containers, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
			for _, ct := range containers {
				if m, ok := ct.(map[string]any); ok && m["name"] == "spoke" {
					m["image"] = image
				}
			}
			_ = unstructured.SetNestedSlice(u.Object, containers, "spec", "template", "spec", "containers")
		}
		if u.GetNamespace() != "" {
			u.SetNamespace(namespace)
		}
		//nolint:staticcheck // server-side apply of unstructured objects; the typed Apply API needs apply configurations.
		if err := c.Patch(ctx, u, client.Apply, client.FieldOwner("hubctl"), client.ForceOwnership); err != nil {
			return applied, fmt.Errorf("applying %s %s: %w", u.GetKind(), u.GetName(), err)
		}
		applied = append(applied, strings.ToLower(u.GetKind())+"/"+u.GetName())
	}
	return applied, nil
}
