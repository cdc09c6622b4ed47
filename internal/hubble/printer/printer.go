// Package printer writes GetFlows responses for people and scripts, in the
// hubble CLI's formats: compact (one line per flow), json (one
// GetFlowsResponse per line, protojson), table and dict.
package printer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/hubble/parser"
)

// Formats.
const (
	Compact = "compact"
	JSON    = "json"
	Table   = "table"
	Dict    = "dict"
)

// Formats lists the output formats.
var Formats = []string{Compact, JSON, Table, Dict}

// Printer writes responses; Flush ends the output (tables are aligned then).
type Printer struct {
	format   string
	w, errW  io.Writer
	tw       *tabwriter.Writer
	nodeName bool
	lines    int
}

// New returns a printer; errW receives lost-event and node notices.
func New(w, errW io.Writer, format string, nodeName bool) (*Printer, error) {
	p := &Printer{format: format, w: w, errW: errW, nodeName: nodeName}
	switch format {
	case Compact, JSON, Dict:
	case Table:
		p.tw = tabwriter.NewWriter(w, 2, 0, 3, ' ', 0)
	default:
		return nil, fmt.Errorf("invalid output format %q: want %s", format, strings.Join(Formats, ", "))
	}
	return p, nil
}

// Write prints one response.
func (p *Printer) Write(r *observerpb.GetFlowsResponse) error {
	if p.format == JSON {
		// As the hubble CLI: protobuf field names, one compact line.
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(r)
		if err != nil {
			return err
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, b); err != nil {
			return err
		}
		buf.WriteByte('\n')
		_, err = p.w.Write(buf.Bytes())
		return err
	}
	switch {
	case r.GetLostEvents() != nil:
		le := r.GetLostEvents()
		_, err := fmt.Fprintf(p.errW, "EVENTS LOST: %s %d\n", le.GetSource(), le.GetNumEventsLost())
		return err
	case r.GetNodeStatus() != nil:
		ns := r.GetNodeStatus()
		_, err := fmt.Fprintf(p.errW, "NODE %s: %s %s\n", ns.GetStateChange(), strings.Join(ns.GetNodeNames(), ", "), ns.GetMessage())
		return err
	case r.GetFlow() == nil:
		return nil
	}
	f := r.GetFlow()
	src, dst := Endpoint(f, true), Endpoint(f, false)
	switch p.format {
	case Table:
		if p.lines == 0 {
			hdr := "TIMESTAMP\t"
			if p.nodeName {
				hdr += "NODE\t"
			}
			fmt.Fprintln(p.tw, hdr+"SOURCE\tDESTINATION\tTYPE\tVERDICT\tSUMMARY")
		}
		row := Timestamp(f) + "\t"
		if p.nodeName {
			row += f.GetNodeName() + "\t"
		}
		fmt.Fprintln(p.tw, row+src+"\t"+dst+"\t"+Type(f)+"\t"+Verdict(f)+"\t"+f.GetSummary())
	case Dict:
		if p.lines > 0 {
			fmt.Fprintln(p.w, "------------")
		}
		fmt.Fprintf(p.w, "  TIMESTAMP: %s\n", Timestamp(f))
		if p.nodeName {
			fmt.Fprintf(p.w, "       NODE: %s\n", f.GetNodeName())
		}
		fmt.Fprintf(p.w, "     SOURCE: %s\nDESTINATION: %s\n       TYPE: %s\n    VERDICT: %s\n    SUMMARY: %s\n",
			src, dst, Type(f), Verdict(f), f.GetSummary())
	default:
		node := ""
		if p.nodeName {
			node = " [" + f.GetNodeName() + "]"
		}
		si, di := Identity(f.GetSource()), Identity(f.GetDestination())
		arrow := "->"
		switch {
		case f.GetIsReply() == nil:
			arrow = "<>"
		case f.GetIsReply().GetValue():
			src, dst, si, di, arrow = dst, src, di, si, "<-"
		}
		if _, err := fmt.Fprintf(p.w, "%s%s: %s %s %s %s %s %s %s (%s)\n", Timestamp(f), node, src, si, arrow, dst, di,
			Type(f), Verdict(f), f.GetSummary()); err != nil {
			return err
		}
	}
	p.lines++
	return nil
}

// Flush finishes a table.
func (p *Printer) Flush() error {
	if p.tw != nil {
		return p.tw.Flush()
	}
	return nil
}

// Timestamp formats a flow's time like the hubble CLI.
func Timestamp(f *flowpb.Flow) string {
	if f.GetTime() == nil {
		return "N/A"
	}
	return f.GetTime().AsTime().Local().Format(time.StampMilli)
}

// Endpoint formats one side: "namespace/pod:port" or "ip:port".
func Endpoint(f *flowpb.Flow, source bool) string {
	ep, ip, port := f.GetDestination(), f.GetIP().GetDestination(), dstPort(f.GetL4())
	if source {
		ep, ip, port = f.GetSource(), f.GetIP().GetSource(), srcPort(f.GetL4())
	}
	host := ip
	if ep.GetPodName() != "" {
		host = ep.GetNamespace() + "/" + ep.GetPodName()
	}
	if port == 0 {
		return host
	}
	if host == ip && strings.Contains(ip, ":") {
		return net.JoinHostPort(ip, strconv.Itoa(int(port)))
	}
	return host + ":" + strconv.Itoa(int(port))
}

// Identity formats an endpoint's identity: "(ID:1234)" or "(world)".
func Identity(ep *flowpb.Endpoint) string {
	if n := parser.ReservedName(ep.GetIdentity()); n != "" {
		return "(" + n + ")"
	}
	return "(ID:" + strconv.Itoa(int(ep.GetIdentity())) + ")"
}

// Type names the event: observation point, drop reason or policy verdict.
func Type(f *flowpb.Flow) string {
	et := f.GetEventType()
	switch et.GetType() {
	case parser.MessageTypeTrace:
		return parser.TraceName(et.GetSubType())
	case parser.MessageTypeDrop:
		return datapath.ReasonName(uint8(et.GetSubType()))
	case parser.MessageTypePolicyVerdict:
		return "policy-verdict:" + matchName(f.GetPolicyMatchType()) + " " + f.GetTrafficDirection().String()
	}
	return "unknown"
}

func matchName(m uint32) string {
	switch m {
	case 0:
		return "none"
	case 1:
		return "L3-Only"
	case 2:
		return "L3-L4"
	case 3:
		return "L4-Only"
	case 4:
		return "all"
	}
	return strconv.Itoa(int(m))
}

// Verdict names the verdict ("AUDITED" for audited policy verdicts).
func Verdict(f *flowpb.Flow) string {
	if f.GetVerdict() == flowpb.Verdict_AUDIT && f.GetEventType().GetType() == parser.MessageTypePolicyVerdict {
		return "AUDITED"
	}
	return f.GetVerdict().String()
}

func srcPort(l *flowpb.Layer4) uint32 {
	switch {
	case l.GetTCP() != nil:
		return l.GetTCP().GetSourcePort()
	case l.GetUDP() != nil:
		return l.GetUDP().GetSourcePort()
	case l.GetSCTP() != nil:
		return l.GetSCTP().GetSourcePort()
	}
	return 0
}

func dstPort(l *flowpb.Layer4) uint32 {
	switch {
	case l.GetTCP() != nil:
		return l.GetTCP().GetDestinationPort()
	case l.GetUDP() != nil:
		return l.GetUDP().GetDestinationPort()
	case l.GetSCTP() != nil:
		return l.GetSCTP().GetDestinationPort()
	}
	return 0
}
