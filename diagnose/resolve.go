package diagnose

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/netdiag/netdiag/collectors"
)

// ResolveTo resolves a destination given by name the way the source pod
// would (its resolv.conf, its nameservers), through the runner that
// reaches the pod, and fills in the addresses: To with the first, AltTo
// with one of the other family when the name has both. A name that does not
// resolve is an error that says to diagnose DNS instead.
func ResolveTo(ctx context.Context, run Runner, r *Request) error {
	if r.To == nil || r.To.Addr.IsValid() || r.To.Name == "" {
		return nil
	}
	name := r.To.Name
	if err := collectors.ValidateName(name); err != nil {
		return err
	}
	p := &Plan{Places: map[collectors.Scope]Place{collectors.ScopeSource: r.Source},
		Jobs:   []collectors.Job{{Collector: "dns", Scope: collectors.ScopeSource}},
		Params: &collectors.Params{DNS: []string{name}, ResolvConf: r.ResolvConf}}
	evs, err := run.Run(ctx, p)
	if err != nil {
		return fmt.Errorf("resolve %s from %s: %w", name, r.Source, err)
	}
	d, ev := collectors.Find[collectors.DNS](evs, "dns", collectors.ScopeSource)
	if d == nil {
		why := "no answer"
		if ev != nil && ev.Error != "" {
			why = ev.Error
		}
		return fmt.Errorf("resolve %s from %s: %s", name, r.Source, why)
	}
	var tried []string
	for _, l := range d.Lookups {
		if l.Role != collectors.RoleResolvConf && l.Role != collectors.RoleFallback {
			continue
		}
		var v4, v6 []netip.Addr
		for _, s := range l.Answers {
			if a, err := netip.ParseAddr(s); err == nil {
				if a.Is4() {
					v4 = append(v4, a)
				} else {
					v6 = append(v6, a)
				}
			}
		}
		all := append(v4, v6...)
		if l.Resolved && len(all) > 0 {
			r.To.Addr = all[0]
			for _, a := range all[1:] {
				if a.Is4() != all[0].Is4() {
					r.AltTo = &collectors.Dest{Addr: a, Port: r.To.Port, Name: name}
					break
				}
			}
			return nil
		}
		last := "no answer"
		if q, ok := l.Last(); ok {
			last = strings.TrimSpace(q.Rcode + " " + q.Error)
		}
		tried = append(tried, l.Server+": "+last)
	}
	return fmt.Errorf("cannot resolve %q from %s (%s); give an IP with --to, or diagnose it with --dns %s", name, r.Source, strings.Join(tried, "; "), name)
}
