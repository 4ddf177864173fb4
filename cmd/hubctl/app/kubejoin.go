package app

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
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
	"github.com/fedgate/fedgate/spoke/uninstall"
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
func kubeJoin(ctx context.Context, o join.Options, kubeconfig, namespace string, install bool) (*fedgatepb.JoinResponse, error) {
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
	if err := writeCredentialsSecret(ctx, c, namespace, data, install); err != nil {
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
// runs first wins) and creates or replaces the Secret's data. A namespace it creates for an install (forInstall) is
// marked hubctl's, so the installation owns it; one made for a join alone is not, as it may be used for more later.
func writeCredentialsSecret(ctx context.Context, c client.Client, namespace string, data map[string][]byte, forInstall bool) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if forInstall {
		ns.Labels = map[string]string{managedByLabel: "hubctl"}
	}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", namespace, err)
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace, Name: CredentialsSecret,
			Labels: map[string]string{"app.kubernetes.io/name": "fedgate-spoke", managedByLabel: "hubctl"},
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
//
// The installation can take itself out again: the spoke's ClusterRole owns (metadata.ownerReferences) every other
// object applied and the credentials Secret — the namespace only when hubctl created it for an install — and the
// agent runs with --install-owner naming it, so once the cluster is removed at the hub the agent deletes that
// ClusterRole and the garbage collector the rest.
func installSpoke(ctx context.Context, kubeconfig, namespace, image string) ([]string, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
	}
	c, err := client.New(rc, client.Options{})
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
	}
	objs, err := SpokeInstall(namespace, image)
	if err != nil {
		return nil, err
	}
	ownNamespace, err := createdByHubctl(ctx, c, namespace)
	if err != nil {
		return nil, err
	}
	var applied []string
	apply := func(u *unstructured.Unstructured) error {
		//nolint:staticcheck // server-side apply of unstructured objects; the typed Apply API needs apply configurations.
		if err := c.Patch(ctx, u, client.Apply, client.FieldOwner("hubctl"), client.ForceOwnership); err != nil {
			return fmt.Errorf("applying %s %s: %w", u.GetKind(), u.GetName(), err)
		}
		applied = append(applied, strings.ToLower(u.GetKind())+"/"+u.GetName())
		return nil
	}
	// The owner first: its UID goes into every other object.
	var owner metav1.OwnerReference
	for _, u := range objs {
		if u.GetKind() == "ClusterRole" && u.GetName() == SpokeClusterRole {
			if err := apply(u); err != nil {
				return applied, err
			}
			owner = metav1.OwnerReference{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRole", Name: u.GetName(), UID: u.GetUID()}
		}
	}
	if owner.UID == "" {
		return applied, fmt.Errorf("spoke manifests: no ClusterRole %s", SpokeClusterRole)
	}
	for _, u := range objs {
		if u.GetKind() == "ClusterRole" && u.GetName() == SpokeClusterRole {
			continue
		}
		if u.GetKind() == "Namespace" && !ownNamespace {
			continue // it exists and is not hubctl's: left as it is, and out of the installation
		}
		if u.GetKind() == "Namespace" {
			u.SetLabels(map[string]string{managedByLabel: "hubctl"})
		}
		u.SetOwnerReferences([]metav1.OwnerReference{owner})
		if err := apply(u); err != nil {
			return applied, err
		}
	}
	// The credentials Secret kubeJoin wrote goes with the installation too: the removed agent deletes the
	// ClusterRole before its credentials, so that a failure leaves it the credentials to hear of the removal again.
	var sec corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: CredentialsSecret}, &sec); err != nil {
		return applied, fmt.Errorf("reading Secret %s/%s: %w", namespace, CredentialsSecret, err)
	}
	base := sec.DeepCopy()
	sec.OwnerReferences = []metav1.OwnerReference{owner}
	if err := c.Patch(ctx, &sec, client.MergeFrom(base)); err != nil {
		return applied, fmt.Errorf("owning Secret %s/%s: %w", namespace, CredentialsSecret, err)
	}
	return applied, nil
}

// SpokeClusterRole is the spoke's ClusterRole in deploy/spoke: the owner of an installation by `hubctl join --install`.
const SpokeClusterRole = "fedgate-spoke"

// SpokeInstall renders what `hubctl join --install` applies: deploy/spoke in namespace, the agent's image set, and the
// agent told (--install-owner) and allowed (spoke/uninstall RBACRules) to delete the ClusterRole that owns the
// installation once its cluster is removed at the hub. Owner references, which need the owner's UID, are set as the
// objects are applied.
func SpokeInstall(namespace, image string) ([]*unstructured.Unstructured, error) {
	objs, err := deploy.Render(deploy.FS, "spoke")
	if err != nil {
		return nil, fmt.Errorf("spoke manifests: %w", err)
	}
	for _, u := range objs {
		switch u.GetKind() {
		case "Namespace":
			u.SetName(namespace)
		case "ClusterRole":
			if u.GetName() != SpokeClusterRole {
				break
			}
			rules, _, _ := unstructured.NestedSlice(u.Object, "rules")
			for _, r := range uninstall.RBACRules(SpokeClusterRole) {
				m, err := k8sruntime.DefaultUnstructuredConverter.ToUnstructured(&r)
				if err != nil {
					return nil, err
				}
				rules = append(rules, m)
			}
			_ = unstructured.SetNestedSlice(u.Object, rules, "rules")
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
					args, _, _ := unstructured.NestedStringSlice(m, "args")
					_ = unstructured.SetNestedStringSlice(m, append(args, "--install-owner="+SpokeClusterRole), "args")
				}
			}
			_ = unstructured.SetNestedSlice(u.Object, containers, "spec", "template", "spec", "containers")
		}
		if u.GetNamespace() != "" {
			u.SetNamespace(namespace)
		}
	}
	return objs, nil
}

// managedByLabel marks a namespace hubctl created (for the credentials Secret or the installation): only such a
// namespace is owned by, and goes with, the installation.
const managedByLabel = "app.kubernetes.io/managed-by"

// createdByHubctl reports whether the installation may own namespace: hubctl created it for an install (it carries
// managedByLabel hubctl), or it does not exist yet and the installation creates it.
func createdByHubctl(ctx context.Context, c client.Client, namespace string) (bool, error) {
	var ns corev1.Namespace
	err := c.Get(ctx, client.ObjectKey{Name: namespace}, &ns)
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading namespace %s: %w", namespace, err)
	}
	return ns.Labels[managedByLabel] == "hubctl", nil
}
