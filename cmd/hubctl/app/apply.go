package app

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/hub/validation"
)

// fileOptions are the -f/-n flags of apply and delete.
type fileOptions struct {
	filenames []string
	namespace string
}

func (o *fileOptions) addFlags(cmd *cobra.Command, verb string) {
	cmd.Flags().StringArrayVarP(&o.filenames, "filename", "f", nil,
		"file, directory (every *.yaml, *.yml, *.json under it) or - for stdin, with the objects to "+verb+"; repeatable")
	cmd.Flags().StringVarP(&o.namespace, "namespace", "n", "", `namespace for objects that name none (default "default")`)
}

// sourced is a decoded object and the file it came from, for error messages.
type sourced struct {
	source string
	obj    *fedgatepb.Object
}

func newApplyCommand(g *globalOptions) *cobra.Command {
	var fo fileOptions
	cmd := &cobra.Command{
		Use:   "apply -f FILENAME",
		Short: "Validate objects locally, then store them at the hub (all or none)",
		Example: `  hubctl apply -f route.yaml
  hubctl apply -f manifests/ -f extra.yaml
  cat route.yaml | hubctl apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			objs, err := readObjects(g.stdin, fo.filenames, fo.namespace)
			if err != nil {
				return err
			}
			// Validate everything before sending anything: the hub applies all or none, and a local refusal names
			// the file, which the hub cannot.
			var errs []error
			for _, s := range objs {
				// An older version with a served version's schema is sent as the served one, and the user told.
				w, err := resources.Upgrade(s.obj)
				if err != nil {
					errs = append(errs, describeInvalid(s.source, err))
					continue
				}
				if w != "" {
					fmt.Fprintf(g.stderr, "Warning: %s: %s\n", s.source, w)
				}
				if err := validation.Validate(s.obj); err != nil {
					errs = append(errs, describeInvalid(s.source, err))
				}
			}
			if len(errs) > 0 {
				return errors.Join(errs...)
			}
			client, closeConn, err := connect(g)
			if err != nil {
				return err
			}
			defer closeConn()
			req := &fedgatepb.ApplyRequest{}
			for _, s := range objs {
				req.Objects = append(req.Objects, s.obj)
			}
			resp, err := call(cmd.Context(), g, client.Apply, req)
			if err != nil {
				return err
			}
			for _, w := range resp.GetWarnings() {
				fmt.Fprintf(g.stderr, "Warning: %s\n", w)
			}
			for _, r := range resp.GetResults() {
				fmt.Fprintf(g.stdout, "%s/%s %s\n", resourceName(r.GetRef().GetApiVersion(), r.GetRef().GetKind()), r.GetRef().GetName(), r.GetAction())
			}
			return nil
		},
	}
	fo.addFlags(cmd, "apply")
	_ = cmd.MarkFlagRequired("filename")
	return cmd
}

func newDeleteCommand(g *globalOptions) *cobra.Command {
	var fo fileOptions
	cmd := &cobra.Command{
		Use:   "delete (-f FILENAME | TYPE NAME...)",
		Short: "Delete objects applied at the hub",
		Example: `  hubctl delete -f route.yaml
  hubctl delete httproute color -n default`,
		RunE: func(cmd *cobra.Command, args []string) error {
			var refs []*fedgatepb.ObjectRef
			switch {
			case len(fo.filenames) > 0 && len(args) > 0:
				return errors.New("delete takes either -f or TYPE NAME..., not both")
			case len(fo.filenames) > 0:
				objs, err := readObjects(g.stdin, fo.filenames, fo.namespace)
				if err != nil {
					return err
				}
				for _, s := range objs {
					refs = append(refs, &fedgatepb.ObjectRef{ApiVersion: s.obj.ApiVersion, Kind: s.obj.Kind, Namespace: s.obj.Namespace, Name: s.obj.Name})
				}
			case len(args) >= 2:
				kinds, ok := resources.KindFor(args[0])
				if !ok || len(kinds) != 1 {
					return fmt.Errorf("delete: %q does not name one kind (try httproute, grpcroute, gateway, referencegrant)", args[0])
				}
				ns := fo.namespace
				if ns == "" && resources.Namespaced(kinds[0]) {
					ns = "default"
				}
				for _, name := range args[1:] {
					refs = append(refs, &fedgatepb.ObjectRef{ApiVersion: apiVersionFor(kinds[0]), Kind: kinds[0], Namespace: ns, Name: name})
				}
			default:
				return errors.New("delete: give -f FILENAME or TYPE NAME...")
			}
			client, closeConn, err := connect(g)
			if err != nil {
				return err
			}
			defer closeConn()
			resp, err := call(cmd.Context(), g, client.Delete, &fedgatepb.DeleteRequest{Refs: refs})
			if err != nil {
				return err
			}
			for _, r := range resp.GetDeleted() {
				fmt.Fprintf(g.stdout, "%s %q deleted\n", resourceName(r.GetApiVersion(), r.GetKind()), r.GetName())
			}
			// Not an error (the object is gone either way, as with kubectl --ignore-not-found), but said, so that a
			// misspelt name does not pass unnoticed.
			for _, r := range resp.GetNotFound() {
				fmt.Fprintf(g.stdout, "%s %q not found\n", resourceName(r.GetApiVersion(), r.GetKind()), r.GetName())
			}
			return nil
		},
	}
	fo.addFlags(cmd, "delete")
	return cmd
}

// readObjects decodes every -f argument in order. Directories are walked recursively in lexical order, so a run is
// reproducible; "-" reads stdin (once).
func readObjects(stdin io.Reader, filenames []string, namespace string) ([]sourced, error) {
	if len(filenames) == 0 {
		return nil, errors.New("must specify one of -f")
	}
	var out []sourced
	stdinUsed := false
	for _, name := range filenames {
		if name == "-" {
			if stdinUsed {
				return nil, errors.New("-f - given more than once: stdin can be read only once")
			}
			stdinUsed = true
			objs, err := resources.DecodeYAML(stdin, "<stdin>", namespace)
			if err != nil {
				return nil, err
			}
			out = appendSourced(out, "<stdin>", objs)
			continue
		}
		files, err := expand(name)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			raw, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			objs, err := resources.DecodeYAML(bytes.NewReader(raw), f, namespace)
			if err != nil {
				return nil, err
			}
			out = appendSourced(out, f, objs)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no objects passed: %s hold no objects", strings.Join(filenames, ", "))
	}
	return out, nil
}

func appendSourced(out []sourced, source string, objs []*fedgatepb.Object) []sourced {
	for _, o := range objs {
		out = append(out, sourced{source: source, obj: o})
	}
	return out
}

// expand turns a -f argument into files: the file itself, or a directory's manifests.
func expand(name string) ([]string, error) {
	info, err := os.Stat(name)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return []string{name}, nil
	}
	var files []string
	err = filepath.WalkDir(name, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		switch strings.ToLower(filepath.Ext(path)) {
		case ".yaml", ".yml", ".json":
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no .yaml, .yml or .json files in directory", name)
	}
	return files, nil
}

// describeInvalid formats a local refusal as kubectl formats an Invalid status: a headline naming the object, then
// one "* field: message" line per cause.
func describeInvalid(source string, err error) error {
	var ie *validation.InvalidError
	if !errors.As(err, &ie) {
		return fmt.Errorf("%s: %w", source, err)
	}
	var b strings.Builder
	name := ie.Name
	if ie.Namespace != "" {
		name = ie.Namespace + "/" + ie.Name
	}
	fmt.Fprintf(&b, "%s: The %s %q is invalid:", source, ie.GroupKind.Kind, name)
	for _, m := range ie.Messages() {
		b.WriteString("\n* ")
		b.WriteString(m)
	}
	return errors.New(b.String())
}

// resourceName is kubectl's name for a kind in output lines: "httproute.gateway.networking.k8s.io", "service".
func resourceName(apiVersion, kind string) string {
	gv, _ := schema.ParseGroupVersion(apiVersion)
	if gv.Group == "" {
		return strings.ToLower(kind)
	}
	return strings.ToLower(kind) + "." + gv.Group
}

// apiVersionFor is the version hubctl names when the user gives only a kind word.
func apiVersionFor(kind string) string {
	for _, gk := range resources.Kinds {
		if gk.Kind != kind {
			continue
		}
		switch gk.Group {
		case "":
			return "v1"
		case "multicluster.x-k8s.io":
			return gk.Group + "/v1alpha1"
		default:
			return gk.Group + "/v1"
		}
	}
	return ""
}
