package store

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
)

// checkReportedConfigMap refuses a reported ConfigMap that carries more than its CA bundle: a cluster reports the
// ConfigMaps its Gateways' caCertificateRefs name in the form resources.ReportedCAConfigMap makes, data[ca.crt] alone,
// so that nothing else a ConfigMap of the cluster holds reaches the hub.
func checkReportedConfigMap(o *fedgatepb.Object) error {
	if o.Kind != resources.KindConfigMap {
		return nil
	}
	var body struct {
		Data       map[string]json.RawMessage `json:"data"`
		BinaryData map[string]json.RawMessage `json:"binaryData"`
	}
	if err := json.Unmarshal(o.Json, &body); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidObject, resources.Describe(o.Kind, o.Namespace, o.Name), err)
	}
	var extra []string
	for k := range body.Data {
		if k != resources.CACertKey {
			extra = append(extra, "data["+k+"]")
		}
	}
	for k := range body.BinaryData {
		extra = append(extra, "binaryData["+k+"]")
	}
	if len(extra) == 0 {
		return nil
	}
	sort.Strings(extra)
	return fmt.Errorf("%w: %s: %s: Forbidden: a cluster reports a ConfigMap with data[%s] alone",
		ErrInvalidObject, resources.Describe(o.Kind, o.Namespace, o.Name), strings.Join(extra, ", "), resources.CACertKey)
}
