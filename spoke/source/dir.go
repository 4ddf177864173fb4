package source

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/spoke/tlssecrets"
)

// Defaults for Dir.
const (
	DefaultDebounce     = 100 * time.Millisecond
	DefaultPollInterval = 10 * time.Second
)

// Dir is a Source backed by a directory of Kubernetes manifests: every *.yaml, *.yml and *.json file below Path,
// recursively, decoded with resources.DecodeYAML. Files and directories whose name starts with "." are skipped, which
// ignores editor swap files and the "..data" indirection of mounted ConfigMaps (whose files are also visible through
// the top-level symlinks).
//
// Unlike the Kubernetes source, Dir applies no admission rules to the objects: EndpointSlices may carry loopback
// addresses, which is what lets several standalone spokes and their backends share one host.
//
// A standalone spoke has no MCS-API controller, so Dir stands in for one: every Service in the directory is exported
// to the clusterset, as if a ServiceExport (multicluster.x-k8s.io/v1alpha1, same namespace/name) had been written
// beside it, unless the directory holds a ServiceExport of its own for it or the Service is annotated
// `fedgate.io/export: "false"`. Without this a standalone federation — the demo, the e2e tests — would serve no
// Service across clusters, since the hub reaches only exported Services from other clusters. A synthesized export
// carries the Service's creationTimestamp (the MCS conflict rule picks the oldest export) and no other metadata.
//
// Secrets in the directory are listener certificates, treated as the Kubernetes source treats a cluster's: only those
// a Gateway of the directory references (tlssecrets.GatewayRefs) are read into TLSSecrets, for the proxy to serve, and
// reported, in their data-free form (resources.ReportedTLSSecret); their data never enters a snapshot or a log.
// ConfigMaps in the directory are CA bundles, likewise: only those a Gateway of the directory references for
// client-certificate validation (tlssecrets.CARefs) are reported, with their ca.crt alone
// (resources.ReportedCAConfigMap); the others are ignored.
//
// A file that fails to decode is logged and its last good objects are kept, so a half-saved edit never withdraws
// routes from the hub. If two files define the same object, the first in lexical path order wins and the clash is
// logged.
type Dir struct {
	// Path of the directory. Required.
	Path string
	// DefaultNamespace for namespaced objects without one. Default "default".
	DefaultNamespace string
	// Debounce: how long the directory must stay quiet after a change before it is rescanned, so an editor's burst of
	// writes and renames yields one snapshot. Default DefaultDebounce.
	Debounce time.Duration
	// PollInterval: a full rescan runs this often even without file events, as a safety net for file systems where
	// inotify is unreliable (network mounts, overlay edge cases). Unchanged files are not re-decoded. Default
	// DefaultPollInterval.
	PollInterval time.Duration
	// TLSSecrets receives the data of the referenced TLS Secrets. Default: a store of the Run's own (the Secrets are
	// still reported, but nothing serves them).
	TLSSecrets *tlssecrets.Store
	// Log, default slog.Default().
	Log *slog.Logger
}

// dirScanner is one Run's state: what it remembers about each file.
type dirScanner struct {
	root, namespace string
	files           map[string]*dirFile
	secrets         *tlssecrets.Store
}

// dirFile is what Dir remembers about one file.
type dirFile struct {
	sum        [sha256.Size]byte   // of the last content read (good or bad): an unchanged file is neither re-decoded nor re-logged
	objs       []*fedgatepb.Object // of the last content that decoded, without its Secrets and ConfigMaps
	secrets    []*corev1.Secret    // of the last content that decoded
	configMaps []*corev1.ConfigMap // of the last content that decoded
}

var _ Source = (*Dir)(nil)

// Run implements Source.
func (d *Dir) Run(ctx context.Context, emit func(Snapshot)) error {
	if d.Path == "" {
		return errors.New("source dir: path must be set")
	}
	if st, err := os.Stat(d.Path); err != nil {
		return fmt.Errorf("source dir: %w", err)
	} else if !st.IsDir() {
		return fmt.Errorf("source dir: %s is not a directory", d.Path)
	}
	log := d.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "source-dir", "dir", d.Path)
	debounce := d.Debounce
	if debounce <= 0 {
		debounce = DefaultDebounce
	}
	poll := d.PollInterval
	if poll <= 0 {
		poll = DefaultPollInterval
	}
	secrets := d.TLSSecrets
	if secrets == nil {
		secrets = tlssecrets.New()
	}
	sc := &dirScanner{root: d.Path, namespace: d.DefaultNamespace, files: map[string]*dirFile{}, secrets: secrets}

	// The watcher is set up before the first scan so that a change made during the scan triggers a second one.
	w, err := fsnotify.NewWatcher()
	var events <-chan fsnotify.Event
	var watchErrs <-chan error
	if err != nil {
		log.Warn("file watching unavailable, polling only", "err", err, "interval", poll)
	} else {
		defer w.Close()
		events, watchErrs = w.Events, w.Errors
	}

	var last Snapshot
	first := true
	rescan := func() {
		if w != nil {
			sc.watchDirs(w, log)
		}
		snap := sc.scan(log)
		if first || !snap.Equal(last) {
			first = false
			last = snap
			log.Debug("snapshot", "objects", len(snap.Objects))
			emit(snap)
		}
	}
	rescan()

	pollTicker := time.NewTicker(poll)
	defer pollTicker.Stop()
	// quiet fires once the directory has been quiet for the debounce period; nil while no change is pending.
	var quiet *time.Timer
	var quietC <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			if quiet != nil {
				quiet.Stop()
			}
			return nil
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			log.Debug("file event", "event", ev.String())
			if quiet == nil {
				quiet = time.NewTimer(debounce)
				quietC = quiet.C
			} else {
				quiet.Reset(debounce)
			}
		case err, ok := <-watchErrs:
			if !ok {
				watchErrs = nil
				continue
			}
			// Typically an event queue overflow: events were lost, so rescan everything.
			log.Warn("file watch error, rescanning", "err", err)
			rescan()
		case <-quietC:
			quiet, quietC = nil, nil
			rescan()
		case <-pollTicker.C:
			rescan()
		}
	}
}

// watchDirs adds a watch on every directory below Path. Adding an existing watch is a no-op, so this runs before every
// scan to pick up new subdirectories; watches on removed directories disappear with them.
func (d *dirScanner) watchDirs(w *fsnotify.Watcher, log *slog.Logger) {
	_ = filepath.WalkDir(d.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil // vanished while walking; the next event rescans
		}
		if !e.IsDir() {
			return nil
		}
		if p != d.root && hidden(e.Name()) {
			return filepath.SkipDir
		}
		if err := w.Add(p); err != nil {
			log.Warn("cannot watch directory", "path", p, "err", err)
		}
		return nil
	})
}

// scan reads every manifest file, re-decoding only files whose content changed, and returns the merged snapshot.
func (d *dirScanner) scan(log *slog.Logger) Snapshot {
	var paths []string
	err := filepath.WalkDir(d.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if p == d.root {
				return err
			}
			return nil
		}
		if p != d.root && hidden(e.Name()) {
			if e.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if e.IsDir() || !manifest(e.Name()) {
			return nil
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		// The directory itself is unreadable (removed, permissions): keep reporting what we had rather than
		// withdrawing every object because of a transient problem.
		log.Error("cannot read directory, keeping last objects", "err", err)
		paths = make([]string, 0, len(d.files))
		for p := range d.files {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)

	seen := make(map[string]bool, len(paths))
	for _, p := range paths {
		seen[p] = true
		b, err := os.ReadFile(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				delete(d.files, p)
				seen[p] = false
				continue
			}
			log.Error("cannot read file, keeping its last good objects", "file", p, "err", err)
			continue
		}
		sum := sha256.Sum256(b)
		f := d.files[p]
		if f != nil && f.sum == sum {
			continue
		}
		if f == nil {
			f = &dirFile{}
			d.files[p] = f
		}
		f.sum = sum
		rest, configMaps, err := splitConfigMapDocs(b, d.namespace)
		var objs []*fedgatepb.Object
		if err == nil {
			objs, err = resources.DecodeYAML(bytes.NewReader(rest), p, d.namespace)
		} else {
			err = fmt.Errorf("%s: %w", p, err)
		}
		for _, o := range objs {
			if err != nil {
				break
			}
			var w string
			if w, err = resources.Upgrade(o); w != "" {
				log.Warn("stored an older apiVersion as the served one", "file", p, "upgrade", w)
			}
		}
		var secrets []*corev1.Secret
		if err == nil {
			objs, secrets, err = splitSecrets(objs)
		}
		var more []*corev1.ConfigMap
		if err == nil {
			objs, more, err = splitConfigMaps(objs)
		}
		if err != nil {
			log.Error("cannot decode file, keeping its last good objects", "file", p, "err", err, "kept", len(f.objs)+len(f.secrets)+len(f.configMaps))
			continue
		}
		f.objs, f.secrets, f.configMaps = objs, secrets, append(configMaps, more...)
	}
	for p := range d.files {
		if !seen[p] {
			delete(d.files, p)
		}
	}

	byID := map[string]string{}
	var objs []*fedgatepb.Object
	var secrets []*corev1.Secret
	var configMaps []*corev1.ConfigMap
	for _, p := range paths {
		f := d.files[p]
		if f == nil {
			continue
		}
		for _, o := range f.objs {
			id := ObjectID(o)
			if other, dup := byID[id]; dup {
				log.Warn("object defined twice, keeping the first", "object", resources.Describe(o.Kind, o.Namespace, o.Name), "file", p, "first", other)
				continue
			}
			byID[id] = p
			objs = append(objs, o)
		}
		for _, s := range f.secrets {
			id := resources.ID(resources.KindSecret, s.Namespace, s.Name)
			if other, dup := byID[id]; dup {
				log.Warn("object defined twice, keeping the first", "object", resources.Describe(resources.KindSecret, s.Namespace, s.Name), "file", p, "first", other)
				continue
			}
			byID[id] = p
			secrets = append(secrets, s)
		}
		for _, cm := range f.configMaps {
			id := resources.ID(resources.KindConfigMap, cm.Namespace, cm.Name)
			if other, dup := byID[id]; dup {
				log.Warn("object defined twice, keeping the first", "object", resources.Describe(resources.KindConfigMap, cm.Namespace, cm.Name), "file", p, "first", other)
				continue
			}
			byID[id] = p
			configMaps = append(configMaps, cm)
		}
	}
	gws := gateways(objs, log)
	objs = append(synthesizeExports(objs, log), d.readSecrets(gws, secrets, log)...)
	objs = append(objs, reportCAs(gws, configMaps, log)...)
	return NewSnapshot(objs)
}

// gateways decodes the Gateways among objs.
func gateways(objs []*fedgatepb.Object, log *slog.Logger) []*gatewayv1.Gateway {
	var out []*gatewayv1.Gateway
	for _, o := range objs {
		if o.Kind != resources.KindGateway {
			continue
		}
		t, err := resources.Typed(o)
		gw, ok := t.(*gatewayv1.Gateway)
		if err != nil || !ok {
			log.Error("cannot read Gateway for its references", "object", resources.Describe(o.Kind, o.Namespace, o.Name), "err", err)
			continue
		}
		out = append(out, gw)
	}
	return out
}

// reportCAs returns the reported form of the ConfigMaps the Gateways gws reference as CA bundles.
func reportCAs(gws []*gatewayv1.Gateway, configMaps []*corev1.ConfigMap, log *slog.Logger) []*fedgatepb.Object {
	refs := map[tlssecrets.Ref]bool{}
	for _, gw := range gws {
		for _, r := range tlssecrets.CARefs(gw) {
			refs[r] = true
		}
	}
	var out []*fedgatepb.Object
	for _, cm := range configMaps {
		if !refs[tlssecrets.Ref{Namespace: cm.Namespace, Name: cm.Name}] {
			continue
		}
		o, err := tlssecrets.ReportedCAObject(cm)
		if err != nil {
			log.Error("cannot encode CA ConfigMap, not reporting it", "object", resources.Describe(resources.KindConfigMap, cm.Namespace, cm.Name), "err", err)
			continue
		}
		out = append(out, o)
	}
	return out
}

// splitConfigMapDocs takes the v1 ConfigMap documents out of the manifest b, decoded (namespace defaulting to
// defaultNamespace): fedgate's resources may not carry the kind, and a ConfigMap is never reported as it is (see Dir).
// The rest is returned for resources.DecodeYAML, each ConfigMap's document replaced by a comment so that the others
// keep their numbers in its errors. A document that does not parse is left for DecodeYAML to report.
func splitConfigMapDocs(b []byte, defaultNamespace string) ([]byte, []*corev1.ConfigMap, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var out bytes.Buffer
	var cms []*corev1.ConfigMap
	for doc := 1; ; doc++ {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return b, nil, nil // DecodeYAML reports it
		}
		if doc > 1 {
			out.WriteString("\n---\n")
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(raw, &tm); err != nil || tm.APIVersion != "v1" || tm.Kind != resources.KindConfigMap {
			out.Write(raw)
			continue
		}
		cm := &corev1.ConfigMap{}
		if err := yaml.Unmarshal(raw, cm); err != nil {
			return nil, nil, fmt.Errorf("document %d: ConfigMap: %w", doc, err)
		}
		if cm.Name == "" {
			return nil, nil, fmt.Errorf("document %d: ConfigMap: metadata.name: Required value", doc)
		}
		if cm.Namespace == "" {
			cm.Namespace = defaultNamespace
			if cm.Namespace == "" {
				cm.Namespace = "default"
			}
		}
		cms = append(cms, cm)
		out.WriteString("# ConfigMap " + cm.Namespace + "/" + cm.Name + " (taken out)\n")
	}
	return out.Bytes(), cms, nil
}

// splitConfigMaps takes the ConfigMaps that resources.DecodeYAML decoded (inside a List, once resources carries the
// kind) out of objs, decoded.
func splitConfigMaps(objs []*fedgatepb.Object) ([]*fedgatepb.Object, []*corev1.ConfigMap, error) {
	var cms []*corev1.ConfigMap
	rest := objs[:0:0]
	for _, o := range objs {
		if o.Kind != resources.KindConfigMap {
			rest = append(rest, o)
			continue
		}
		cm := &corev1.ConfigMap{}
		if err := yaml.Unmarshal(o.Json, cm); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", resources.Describe(o.Kind, o.Namespace, o.Name), err)
		}
		cm.Namespace, cm.Name = o.Namespace, o.Name
		cms = append(cms, cm)
	}
	return rest, cms, nil
}

// readSecrets holds the Secrets the Gateways gws reference in the scanner's store, drops the others from it,
// and returns the reported form of those it holds.
func (d *dirScanner) readSecrets(gws []*gatewayv1.Gateway, secrets []*corev1.Secret, log *slog.Logger) []*fedgatepb.Object {
	refs := map[tlssecrets.Ref]bool{}
	for _, gw := range gws {
		for _, r := range tlssecrets.GatewayRefs(gw) {
			refs[r] = true
		}
	}
	held := map[tlssecrets.Ref]bool{}
	for _, s := range secrets {
		r := tlssecrets.Ref{Namespace: s.Namespace, Name: s.Name}
		if !refs[r] {
			continue
		}
		if err := d.secrets.Set(s); err != nil {
			log.Error("cannot hold TLS Secret", "object", resources.Describe(resources.KindSecret, s.Namespace, s.Name), "err", err)
			continue
		}
		held[r] = true
	}
	d.secrets.Retain(func(r tlssecrets.Ref) bool { return held[r] })
	return d.secrets.Objects()
}

// splitSecrets takes the Secrets out of objs, decoded: they are never reported as they are (see Dir). A Secret's
// stringData is merged into its data, as the API server does.
func splitSecrets(objs []*fedgatepb.Object) ([]*fedgatepb.Object, []*corev1.Secret, error) {
	var secrets []*corev1.Secret
	rest := objs[:0:0]
	for _, o := range objs {
		if o.Kind != resources.KindSecret {
			rest = append(rest, o)
			continue
		}
		s := &corev1.Secret{}
		if err := yaml.Unmarshal(o.Json, s); err != nil {
			// The error of a JSON decoder names fields and types, never the values.
			return nil, nil, fmt.Errorf("%s: %w", resources.Describe(o.Kind, o.Namespace, o.Name), err)
		}
		s.Namespace, s.Name = o.Namespace, o.Name
		for k, v := range s.StringData {
			if s.Data == nil {
				s.Data = map[string][]byte{}
			}
			s.Data[k] = []byte(v)
		}
		s.StringData = nil
		secrets = append(secrets, s)
	}
	return rest, secrets, nil
}

// ExportAnnotation on a Service set to "false" keeps Dir from exporting it (see Dir).
const ExportAnnotation = "fedgate.io/export"

// synthesizeExports appends a ServiceExport for every Service that has none and does not opt out (see Dir).
func synthesizeExports(objs []*fedgatepb.Object, log *slog.Logger) []*fedgatepb.Object {
	exported := map[string]bool{}
	for _, o := range objs {
		if o.Kind == resources.KindServiceExport {
			exported[o.Namespace+"/"+o.Name] = true
		}
	}
	out := objs
	for _, o := range objs {
		if o.Kind != resources.KindService || exported[o.Namespace+"/"+o.Name] {
			continue
		}
		svc := &unstructured.Unstructured{}
		if err := svc.UnmarshalJSON(o.Json); err != nil {
			// DecodeYAML produced this JSON, so this is not expected; without the annotation, do not guess.
			log.Error("cannot read Service to export it", "object", resources.Describe(o.Kind, o.Namespace, o.Name), "err", err)
			continue
		}
		if svc.GetAnnotations()[ExportAnnotation] == "false" {
			continue
		}
		se := &unstructured.Unstructured{}
		se.SetAPIVersion(mcsv1a1.GroupVersion.String())
		se.SetKind(resources.KindServiceExport)
		se.SetNamespace(o.Namespace)
		se.SetName(o.Name)
		se.SetCreationTimestamp(svc.GetCreationTimestamp())
		eo, err := resources.FromUnstructured(se, o.Namespace)
		if err != nil {
			log.Error("cannot synthesize ServiceExport", "object", resources.Describe(o.Kind, o.Namespace, o.Name), "err", err)
			continue
		}
		out = append(out, eo)
	}
	return out
}

func hidden(name string) bool { return strings.HasPrefix(name, ".") }

func manifest(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}
