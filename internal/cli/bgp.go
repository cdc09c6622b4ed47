package cli

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lumen-net/lumen/internal/api"
)

func newBGPCmd() *cobra.Command {
	c := &cobra.Command{Use: "bgp", Short: "The node's BGP sessions and announced routes"}
	c.AddCommand(&cobra.Command{
		Use:   "peers",
		Short: "BGP sessions: state, uptime, prefixes sent and received",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := JSONOutput()
			if err != nil {
				return err
			}
			var peers []api.BGPPeer
			if err := client().Do(cmd.Context(), "GET", "/v1/bgp/peers", nil, &peers); err != nil {
				return err
			}
			if asJSON {
				return PrintJSON(os.Stdout, peers)
			}
			now := time.Now()
			var rows [][]string
			for _, p := range peers {
				gr := "-"
				if p.GracefulRestart {
					gr = fmt.Sprintf("%ds", p.RestartTime)
				}
				info := p.LastError
				if p.State != api.BGPEstablished && p.NextRetry > 0 {
					info = strings.TrimPrefix(info+"; ", "; ") + fmt.Sprintf("retrying every %ds", p.NextRetry)
				}
				rows = append(rows, []string{
					u(p.LocalASN), p.PeerAddress, u(p.PeerASN), p.State, since(now, p.Since),
					fmt.Sprintf("%d/%d", p.PrefixesSent, p.PrefixesReceived), fmt.Sprintf("%d/%d", p.HoldTime, p.Keepalive), gr,
					Dash(strings.Join(p.Families, ",")), Dash(info),
				})
			}
			return printTable("LOCAL-AS\tPEER\tPEER-AS\tSTATE\tFOR\tSENT/RCVD\tHOLD/KEEPALIVE\tGR\tFAMILIES\tINFO", rows)
		},
	})
	c.AddCommand(&cobra.Command{
		Use:   "routes",
		Short: "Routes this node announces and the peers they went to",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := JSONOutput()
			if err != nil {
				return err
			}
			var routes []api.BGPRoute
			if err := client().Do(cmd.Context(), "GET", "/v1/bgp/routes", nil, &routes); err != nil {
				return err
			}
			if asJSON {
				return PrintJSON(os.Stdout, routes)
			}
			now := time.Now()
			var rows [][]string
			for _, r := range routes {
				rows = append(rows, []string{u(r.LocalASN), r.Prefix, r.NextHop, r.Origin, Dash(strings.Join(r.AdvertisedTo, ",")), since(now, r.Since)})
			}
			return printTable("LOCAL-AS\tPREFIX\tNEXT-HOP\tORIGIN\tADVERTISED-TO\tAGE", rows)
		},
	})
	return c
}

// since is a short age like "3m12s"; "-" for an unknown time.
func since(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t).Truncate(time.Second)
	if d < 0 {
		d = 0
	}
	if d >= 24*time.Hour {
		return fmt.Sprintf("%dd%s", d/(24*time.Hour), (d % (24 * time.Hour)).Truncate(time.Hour))
	}
	return d.String()
}
