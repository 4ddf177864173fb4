// Package validation checks objects applied at the hub exactly as a Kubernetes API server with the Gateway API CRDs
// would. (Stub: replaced by the full implementation.)
package validation

import (
	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
)

// Validate returns an error naming the object and field when o would be refused by an API server.
func Validate(o *fedgatepb.Object) error {
	_, err := resources.Typed(o)
	return err
}
