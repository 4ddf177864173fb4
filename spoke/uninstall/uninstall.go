// Package uninstall takes an agent's installation out of its cluster once the cluster was removed at the hub.
// `hubctl join --install` makes one ClusterRole the owner (metadata.ownerReferences) of every other object it applies:
// deleting that ClusterRole lets Kubernetes' garbage collector delete the rest — the Deployment (and with it the pods,
// this one included), Services, ServiceAccount, Roles and bindings, and the namespace when hubctl created it. The
// agent itself could not delete them one by one: the last RBAC object it deleted would take away the permission to
// delete the next.
package uninstall

import (
	"context"
	"fmt"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	rbacv1client "k8s.io/client-go/kubernetes/typed/rbac/v1"
	"k8s.io/client-go/rest"
)

// RBACRules are the permissions Delete needs: delete of the one ClusterRole, nothing else.
func RBACRules(clusterRole string) []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{{APIGroups: []string{rbacv1.GroupName}, Resources: []string{"clusterroles"},
		ResourceNames: []string{clusterRole}, Verbs: []string{"delete"}}}
}

// Delete deletes the ClusterRole that owns the installation, leaving its dependents to the garbage collector (in the
// background: this agent's own pod is one of them). Gone already is no error.
func Delete(ctx context.Context, rc *rest.Config, clusterRole string) error {
	c, err := rbacv1client.NewForConfig(rc)
	if err != nil {
		return err
	}
	bg := metav1.DeletePropagationBackground
	err = c.ClusterRoles().Delete(ctx, clusterRole, metav1.DeleteOptions{PropagationPolicy: &bg})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting ClusterRole %s, the owner of this agent's installation: %w", clusterRole, err)
	}
	return nil
}
