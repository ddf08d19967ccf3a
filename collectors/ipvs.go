package collectors

import (
	"bufio"
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/netdiag/netdiag/internal/tools"
)

// IPVS is `ipvsadm -Ln` of a namespace: kube-proxy's IPVS mode keeps a
// virtual server per ClusterIP and port, with the endpoints as real servers.
type IPVS struct {
	// Available is false when the kernel has no IPVS (no ip_vs module):
	// then kube-proxy cannot be in IPVS mode on this node.
	Available bool          `json:"available"`
	Note      string        `json:"note,omitempty"`
	Services  []IPVSService `json:"services"`
}

// IPVSService is one virtual server.
type IPVSService struct {
	Proto     string     `json:"proto"`
	Addr      string     `json:"addr"` // IP:PORT
	Scheduler string     `json:"scheduler"`
	Reals     []IPVSReal `json:"reals"`
}

// IPVSReal is one real server (endpoint).
type IPVSReal struct {
	Addr       string `json:"addr"`
	Forward    string `json:"forward"`
	Weight     int    `json:"weight"`
	ActiveConn int    `json:"active_conn"`
	InactConn  int    `json:"inact_conn"`
}

// Find returns the virtual server for an address ("IP:PORT") and protocol.
func (v *IPVS) Find(proto, addr string) *IPVSService {
	for i := range v.Services {
		if strings.EqualFold(v.Services[i].Proto, proto) && v.Services[i].Addr == addr {
			return &v.Services[i]
		}
	}
	return nil
}

func init() {
	register(spec{name: "ipvs", help: "ipvsadm -Ln: IPVS virtual servers and their real servers (kube-proxy IPVS mode)",
		scopes: []Scope{ScopeNode}, timeout: 3 * time.Second}, collectIPVS)
}

func collectIPVS(ctx context.Context, in Input) (*IPVS, error) {
	bin, err := tools.Find("ipvsadm")
	if err != nil {
		return nil, err
	}
	text, err := in.NS.Output(ctx, bin, "-Ln")
	if err != nil {
		if strings.Contains(err.Error(), "Protocol not available") {
			note := "IPVS is not available in this kernel (no ip_vs module): kube-proxy here runs in iptables or nftables mode"
			return &IPVS{Note: note}, NotApplicable("%s", note)
		}
		return nil, err
	}
	v := ParseIPVSADM(string(text))
	v.Available = true
	return v, nil
}

// ParseIPVSADM parses `ipvsadm -Ln`.
func ParseIPVSADM(text string) *IPVS {
	out := &IPVS{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch {
		case (f[0] == "TCP" || f[0] == "UDP" || f[0] == "SCTP") && len(f) >= 3:
			out.Services = append(out.Services, IPVSService{Proto: f[0], Addr: f[1], Scheduler: f[2]})
		case f[0] == "->" && len(f) >= 6 && f[1] != "RemoteAddress:Port" && len(out.Services) > 0:
			r := IPVSReal{Addr: f[1], Forward: f[2]}
			r.Weight, _ = strconv.Atoi(f[3])
			r.ActiveConn, _ = strconv.Atoi(f[4])
			r.InactConn, _ = strconv.Atoi(f[5])
			s := &out.Services[len(out.Services)-1]
			s.Reals = append(s.Reals, r)
		}
	}
	return out
}
