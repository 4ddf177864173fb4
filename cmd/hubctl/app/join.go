package app

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/spoke/join"
)

func newTokenCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage bootstrap tokens clusters join with"}
	var ttl time.Duration
	var usages int32
	var clusterName, description string
	var rejoin bool
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a bootstrap token and print the join command",
		Long: `Create a bootstrap token (id.secret) and print the complete command that joins a cluster with it. The hub
stores only a hash of the secret: this is the only time it is shown.

A token never admits the name of a cluster that is joined already. To re-join a member (new credentials, for example
after its key was lost or exposed), create a token with --cluster-name NAME --rejoin: the join with it revokes every
certificate the cluster held and cuts its open streams.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl < time.Second {
				return fmt.Errorf("--ttl %v: must be at least 1s", ttl)
			}
			if usages < 1 {
				return fmt.Errorf("--usages %d: must be at least 1", usages)
			}
			if rejoin && clusterName == "" {
				return errors.New("--rejoin: needs --cluster-name (a re-join token is for one named cluster)")
			}
			client, done, err := connect(g)
			if err != nil {
				return err
			}
			defer done()
			resp, err := call(cmd.Context(), g, client.CreateToken, &fedgatepb.CreateTokenRequest{
				TtlSeconds: int64(ttl / time.Second), Usages: usages, ClusterName: clusterName, Rejoin: rejoin, Description: description,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "Token %s created: %d usage(s), expires %s.\n", resp.GetInfo().GetId(), resp.GetInfo().GetUsagesLeft(),
				time.Unix(resp.GetInfo().GetExpiresUnix(), 0).UTC().Format(time.RFC3339))
			if rejoin {
				fmt.Fprintf(g.stdout, "Joining %s with it revokes every certificate %s holds now.\n", clusterName, clusterName)
			}
			printJoinCommands(g.stdout, resp.GetJoinCommand(), clusterName)
			return nil
		},
	}
	create.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid")
	create.Flags().Int32Var(&usages, "usages", 1, "how many clusters may join with it")
	create.Flags().StringVar(&clusterName, "cluster-name", "", "only a cluster of this name may join with it")
	create.Flags().BoolVar(&rejoin, "rejoin", false, "let the token re-join --cluster-name while it is joined, revoking its current certificates")
	create.Flags().StringVar(&description, "description", "", "free text shown by token list")

	list := &cobra.Command{
		Use: "list", Short: "List bootstrap tokens (never their secrets)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, done, err := connect(g)
			if err != nil {
				return err
			}
			defer done()
			resp, err := call(cmd.Context(), g, client.ListTokens, &fedgatepb.ListTokensRequest{})
			if err != nil {
				return err
			}
			return printTokens(g.stdout, resp.GetTokens())
		},
	}
	del := &cobra.Command{
		Use: "delete ID...", Short: "Delete bootstrap tokens", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, done, err := connect(g)
			if err != nil {
				return err
			}
			defer done()
			var errs []error
			for _, id := range args {
				id, _, _ = strings.Cut(id, ".") // a whole token names its id; the secret is never sent
				if _, err := call(cmd.Context(), g, client.DeleteToken, &fedgatepb.DeleteTokenRequest{Id: id}); err != nil {
					errs = append(errs, err)
					continue
				}
				fmt.Fprintf(g.stdout, "token %s deleted\n", id)
			}
			return errors.Join(errs...)
		},
	}
	cmd.AddCommand(create, list, del)
	return cmd
}

// printJoinCommands shows the two ways to join with a token: credentials into a directory for a spoke started by hand,
// or into a Secret of a Kubernetes cluster with the spoke installed there (deploy/spoke, embedded in hubctl). join is
// the hub's command, which names the hub, token, CA hash and cluster.
func printJoinCommands(w io.Writer, join, clusterName string) {
	dir := "fedgate-" + clusterName
	if clusterName == "" {
		dir = "fedgate-NAME"
	}
	fmt.Fprintf(w, "Join a cluster with its credentials written to ./%s (or --out DIR), for spoke --credentials-dir:\n\n  %s\n", dir, join)
	fmt.Fprintf(w, "\nor join a Kubernetes cluster and install the spoke in it (credentials in a Secret there; HOST:15443 is where\n"+
		"other clusters reach its fedgate-east-west Service):\n\n  %s --kubeconfig KUBECONFIG --east-west-address HOST:15443 --install\n", join)
}

func printTokens(w io.Writer, toks []*fedgatepb.TokenInfo) error {
	sort.Slice(toks, func(i, j int) bool { return toks[i].GetId() < toks[j].GetId() })
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "ID\tUSAGES LEFT\tEXPIRES\tCLUSTER\tDESCRIPTION")
	for _, t := range toks {
		cluster := orNone(t.GetClusterName(), "<any new>")
		if t.GetRejoin() {
			cluster += " (rejoin)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", t.GetId(), t.GetUsagesLeft(), time.Unix(t.GetExpiresUnix(), 0).UTC().Format(time.RFC3339),
			cluster, orNone(t.GetDescription(), "<none>"))
	}
	return tw.Flush()
}

func newJoinCommand(g *globalOptions) *cobra.Command {
	var o join.Options
	var labels, kubeconfig, namespace, image string
	var install bool
	cmd := &cobra.Command{
		Use:   "join --hub ADDR --token ID.SECRET --ca-hash sha256:HEX --cluster-name NAME",
		Short: "Join this cluster to a hub and write its credentials",
		Long: `Join a cluster: check that the hub's CA matches --ca-hash (before anything is sent), create the cluster's key
here, send a certificate request with the token, and write tls.key, tls.crt and ca.crt into --out. Needs no admin
credential; the token authenticates.

With --kubeconfig the credentials go instead into the Secret ` + CredentialsSecret + ` in --namespace of that cluster
(keys tls.key, tls.crt, ca.crt, and ` + SecretKeyHub + `, ` + SecretKeyCluster + `, ` + SecretKeyEastWestAddress + ` for the
spoke Deployment of deploy/spoke); the key is never written to this machine's disk.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Hub = g.hub
			if o.Hub == "" {
				return errors.New("--hub is required")
			}
			if o.CAHash == "" {
				return errors.New("--ca-hash is required: it is how this command knows it talks to your hub (see `hubctl token create`)")
			}
			var err error
			if o.Labels, err = parseLabels(labels); err != nil {
				return fmt.Errorf("--labels: %w", err)
			}
			o.Timeout = g.timeout
			if install && kubeconfig == "" {
				return errors.New("--install needs --kubeconfig")
			}
			if kubeconfig != "" {
				if o.OutDir != "" {
					return errOutAndKubeconfig
				}
				if namespace == "" {
					return errors.New("--namespace must not be empty")
				}
				resp, err := kubeJoin(cmd.Context(), o, kubeconfig, namespace, install)
				if errors.Is(err, join.ErrCAMismatch) {
					return fmt.Errorf("the hub at %s: %w", o.Hub, err)
				}
				if err != nil {
					return hubError(o.Hub, err)
				}
				fmt.Fprintf(g.stdout, "Cluster %s joined the hub at %s; credentials in Secret %s/%s (certificate valid until %s, renewed automatically).\n",
					o.ClusterName, o.Hub, namespace, CredentialsSecret, time.Unix(resp.GetExpiresUnix(), 0).UTC().Format(time.RFC3339))
				if !install {
					fmt.Fprintf(g.stdout, "Install the spoke with --install, or:\n\n  kubectl --kubeconfig %s apply -k deploy/spoke\n", kubeconfig)
					return nil
				}
				applied, err := installSpoke(cmd.Context(), kubeconfig, namespace, image)
				for _, a := range applied {
					fmt.Fprintf(g.stdout, "%s serverside-applied\n", a)
				}
				if err != nil {
					return fmt.Errorf("installing the spoke: %w", err)
				}
				return nil
			}
			if o.OutDir == "" {
				o.OutDir = "fedgate-" + o.ClusterName
			}
			resp, err := join.Run(cmd.Context(), o)
			if errors.Is(err, join.ErrCAMismatch) {
				return fmt.Errorf("the hub at %s: %w", o.Hub, err)
			}
			if err != nil {
				return hubError(o.Hub, err)
			}
			fmt.Fprintf(g.stdout, "Cluster %s joined the hub at %s; credentials in %s (certificate valid until %s, renewed automatically).\n",
				o.ClusterName, o.Hub, o.OutDir, time.Unix(resp.GetExpiresUnix(), 0).UTC().Format(time.RFC3339))
			fmt.Fprintf(g.stdout, "Start the spoke with:\n\n  spoke --hub %s --credentials-dir %s --source-dir DIR", o.Hub, o.OutDir)
			if o.EastWestAddress != "" {
				fmt.Fprintf(g.stdout, " --east-west-address %s", o.EastWestAddress)
			}
			fmt.Fprintln(g.stdout)
			return nil
		},
	}
	cmd.Flags().StringVar(&o.Token, "token", "", "bootstrap token id.secret (from hubctl token create)")
	cmd.Flags().StringVar(&o.CAHash, "ca-hash", "", "sha256:HEX pin of the hub's CA (from hubctl token create)")
	cmd.Flags().StringVar(&o.ClusterName, "cluster-name", "", "name of the joining cluster")
	cmd.Flags().StringVar(&labels, "labels", "", "cluster labels k=v,k=v")
	cmd.Flags().StringVar(&o.EastWestAddress, "east-west-address", "", "host:port other spokes reach this cluster's east-west listener at")
	cmd.Flags().StringVar(&o.OutDir, "out", "", "directory for the credentials (default ./fedgate-NAME)")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "write the credentials into a Secret of this cluster instead of --out")
	cmd.Flags().StringVar(&namespace, "namespace", DefaultNamespace, "namespace of the credentials Secret (with --kubeconfig)")
	cmd.Flags().BoolVar(&install, "install", false, "with --kubeconfig: also install the spoke agent (deploy/spoke, embedded) into --namespace")
	cmd.Flags().StringVar(&image, "image", DefaultSpokeImage, "spoke image for --install")
	for _, f := range []string{"token", "cluster-name"} {
		_ = cmd.MarkFlagRequired(f)
	}
	return cmd
}

// parseLabels reads "k=v,k=v".
func parseLabels(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q: want key=value", kv)
		}
		out[k] = v
	}
	return out, nil
}

func newClusterCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Manage joined clusters"}
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a cluster: revoke its certificates, cut its streams and drop its objects from the graph",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, done, err := connect(g)
			if err != nil {
				return err
			}
			defer done()
			resp, err := call(cmd.Context(), g, client.RemoveCluster, &fedgatepb.RemoveClusterRequest{Name: args[0]})
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "cluster %s removed: %d certificate(s) revoked, %d reported object(s) dropped\n",
				args[0], len(resp.GetRevokedSerials()), resp.GetRemovedObjects())
			return nil
		},
	}
	cmd.AddCommand(remove)
	return cmd
}
