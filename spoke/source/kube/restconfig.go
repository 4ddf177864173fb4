package kube

import (
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// RESTConfig loads the configuration for reaching the spoke's API server the way kubectl does: the kubeconfig file
// at path when set, else $KUBECONFIG or ~/.kube/config, else the in-cluster service account (a spoke running as a
// Deployment). The spoke's own cluster is always the kubeconfig's current context.
func RESTConfig(path string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = path
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		if path != "" {
			return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
		}
		return nil, fmt.Errorf("no kubeconfig and not running in a cluster: %w", err)
	}
	cfg.UserAgent = "fedgate-spoke"
	return cfg, nil
}
