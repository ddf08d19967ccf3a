package bot

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/netdiag/netdiag/config"
)

// Who is the person behind a command and where they typed it.
type Who struct {
	User    string
	Channel string
}

// Members tells which users are in a Slack user group.
type Members interface {
	GroupMembers(ctx context.Context, group string) ([]string, error)
}

// Access decides who may do what, from the config's rules. A rule grants
// verbs in namespaces to users, to user groups or to everyone in a channel.
// Nothing is granted without a rule, payload capture included: a bot that
// can run tcpdump in any pod is not open to anyone by default.
type Access struct {
	Rules   []config.AccessRule
	Members Members
	// CacheFor is how long a group's members are remembered (default 5m).
	CacheFor time.Duration

	mu     sync.Mutex
	groups map[string]groupCache
}

type groupCache struct {
	members []string
	at      time.Time
}

// DeniedError says which permission a command needed.
type DeniedError struct {
	Verb, Namespace string
	// Reason is set when the check itself failed (a group lookup).
	Reason string
}

func (e *DeniedError) Error() string {
	where := "in namespace " + e.Namespace
	if e.Namespace == "" {
		where = `in every namespace ("*")`
	}
	msg := fmt.Sprintf("you need the %q permission %s: ask an admin to add you, a user group of yours or this channel to an access rule of netdiag's config with verbs: [%s] and namespaces: [%s]",
		e.Verb, where, e.Verb, orStar(e.Namespace))
	if e.Reason != "" {
		msg += " (" + e.Reason + ")"
	}
	return msg
}

func orStar(ns string) string {
	if ns == "" {
		return `"*"`
	}
	return ns
}

// Allow returns nil when a rule grants the verb in the namespace to who,
// else a *DeniedError. An empty namespace (a node, history of everything,
// a digest) is covered only by "*".
func (a *Access) Allow(ctx context.Context, who Who, verb, namespace string) error {
	var lookupErr error
	for _, r := range a.Rules {
		if !slices.Contains(r.Verbs, verb) {
			continue
		}
		if !slices.Contains(r.Namespaces, "*") && (namespace == "" || !slices.Contains(r.Namespaces, namespace)) {
			continue
		}
		if slices.Contains(r.Users, who.User) || slices.Contains(r.Channels, who.Channel) {
			return nil
		}
		for _, g := range r.Groups {
			members, err := a.members(ctx, g)
			if err != nil {
				lookupErr = err
				continue
			}
			if slices.Contains(members, who.User) {
				return nil
			}
		}
	}
	d := &DeniedError{Verb: verb, Namespace: namespace}
	if lookupErr != nil {
		d.Reason = "a user group could not be read: " + lookupErr.Error()
	}
	return d
}

func (a *Access) members(ctx context.Context, group string) ([]string, error) {
	if a.Members == nil {
		return nil, fmt.Errorf("user group %s: the bot cannot read user groups", group)
	}
	ttl := a.CacheFor
	if ttl == 0 {
		ttl = 5 * time.Minute
	}
	a.mu.Lock()
	c, ok := a.groups[group]
	a.mu.Unlock()
	if ok && time.Since(c.at) < ttl {
		return c.members, nil
	}
	m, err := a.Members.GroupMembers(ctx, group)
	if err != nil {
		return nil, fmt.Errorf("user group %s: %w", group, err)
	}
	a.mu.Lock()
	if a.groups == nil {
		a.groups = map[string]groupCache{}
	}
	a.groups[group] = groupCache{members: m, at: time.Now()}
	a.mu.Unlock()
	return m, nil
}

// Grants lists, for help, what who may do.
func (a *Access) Grants(ctx context.Context, who Who) string {
	var out []string
	for _, v := range config.Verbs {
		var nss []string
		for _, r := range a.Rules {
			if !slices.Contains(r.Verbs, v) {
				continue
			}
			if a.Allow(ctx, who, v, firstNamespace(r.Namespaces)) == nil {
				nss = append(nss, r.Namespaces...)
			}
		}
		if len(nss) > 0 {
			slices.Sort(nss)
			out = append(out, v+" in "+strings.Join(slices.Compact(nss), ", "))
		}
	}
	if len(out) == 0 {
		return "nothing yet"
	}
	return strings.Join(out, "; ")
}

func firstNamespace(nss []string) string {
	if slices.Contains(nss, "*") {
		return ""
	}
	if len(nss) > 0 {
		return nss[0]
	}
	return ""
}
