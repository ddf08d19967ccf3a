package agent

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/netdiag/netdiag/internal/kubeapi"
)

// User is an authenticated caller.
type User struct {
	Name   string
	UID    string
	Groups []string
	Extra  map[string][]string
}

// Access is what a caller asks to do: diagnose in a namespace ("" for a
// node's own namespace, which is cluster-wide), with the payload of the
// packets or without.
type Access struct {
	Namespace string
	Name      string // the pod or node
	Payload   bool
}

// Auth decides who may call the agent and what they may diagnose.
type Auth interface {
	// Authenticate reads the caller from the request; ErrUnauthenticated
	// when it carries no valid credential.
	Authenticate(ctx context.Context, r *http.Request) (*User, error)
	// Authorize says whether the user may do what it asks; an error
	// wrapping ErrForbidden says why not.
	Authorize(ctx context.Context, u *User, a Access) error
}

var (
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrForbidden       = errors.New("forbidden")
)

// bearer reads an Authorization: Bearer token.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

// StaticToken admits one shared token, for an agent with no cluster to ask
// (the lab, a bare host). Its holder may diagnose anything on the node.
type StaticToken struct{ Token string }

func (s StaticToken) Authenticate(_ context.Context, r *http.Request) (*User, error) {
	tok, ok := bearer(r)
	if !ok {
		return nil, fmt.Errorf("%w: no bearer token", ErrUnauthenticated)
	}
	// Compared as hashes so that the comparison takes the same time
	// whatever the lengths.
	a, b := sha256.Sum256([]byte(tok)), sha256.Sum256([]byte(s.Token))
	if s.Token == "" || subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
		return nil, fmt.Errorf("%w: wrong token", ErrUnauthenticated)
	}
	return &User{Name: "static-token"}, nil
}

func (StaticToken) Authorize(context.Context, *User, Access) error { return nil }

// KubeAuth checks a token with the TokenReview API (audience netdiag-agent,
// so a token minted for the API server, or for another service, is not
// accepted), then asks the API server's SubjectAccessReview whether the
// user may create diagnoses.netdiag.io in the namespace: RBAC decides. The
// answers are cached briefly, as the kubelet does, so that a diagnosis does
// not wait on the API server for every call.
type KubeAuth struct {
	Client *kubeapi.Client
	// Audiences a token may be minted for (default netdiag-agent). Adding
	// the API server's own audience lets kubectl users' tokens in, as the
	// kubelet does; the agent then sees tokens that also work against the
	// API server.
	Audiences []string
	// X509: a client certificate verified by the server's TLS (its client
	// CA is the cluster's) authenticates its subject: CN the user, O the
	// groups, as the API server reads it.
	X509 bool
	// AllowTTL, DenyTTL: how long answers are kept (default 2 min, 10 s).
	AllowTTL, DenyTTL time.Duration

	mu     sync.Mutex
	tokens map[[32]byte]cached[*User]
	access map[string]cached[error]
}

type cached[T any] struct {
	v       T
	err     error
	expires time.Time
}

// The virtual resource RBAC grants: `create` on `diagnoses` in group
// netdiag.io, in the pod's namespace (or cluster-wide for nodes); the
// subresource `payload` for captures with the packets' contents.
const (
	ResourceGroup = "netdiag.io"
	Resource      = "diagnoses"
	Verb          = "create"
	SubPayload    = "payload"
)

func (k *KubeAuth) ttl(ok bool) time.Duration {
	if ok {
		if k.AllowTTL > 0 {
			return k.AllowTTL
		}
		return 2 * time.Minute
	}
	if k.DenyTTL > 0 {
		return k.DenyTTL
	}
	return 10 * time.Second
}

func (k *KubeAuth) Authenticate(ctx context.Context, r *http.Request) (*User, error) {
	tok, ok := bearer(r)
	if !ok && k.X509 && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		sub := r.TLS.VerifiedChains[0][0].Subject
		if sub.CommonName == "" {
			return nil, fmt.Errorf("%w: the client certificate has no common name", ErrUnauthenticated)
		}
		return &User{Name: sub.CommonName, Groups: append(slices.Clone(sub.Organization), "system:authenticated")}, nil
	}
	if !ok {
		return nil, fmt.Errorf("%w: no bearer token (a ServiceAccount token with audience %s)", ErrUnauthenticated, Audience)
	}
	key := sha256.Sum256([]byte(tok))
	now := time.Now()
	k.mu.Lock()
	if c, ok := k.tokens[key]; ok && now.Before(c.expires) {
		k.mu.Unlock()
		return c.v, c.err
	}
	k.mu.Unlock()
	aud := k.Audiences
	if len(aud) == 0 {
		aud = []string{Audience}
	}
	ui, reason, err := k.Client.TokenReview(ctx, tok, aud)
	if err != nil {
		// The API server did not answer: not the caller's fault, not cached.
		return nil, fmt.Errorf("token review: %w", err)
	}
	var u *User
	if ui == nil {
		if reason == "" {
			reason = "the API server did not accept it"
		}
		err = fmt.Errorf("%w: token rejected (audience %s): %s", ErrUnauthenticated, strings.Join(aud, ","), reason)
	} else {
		u = &User{Name: ui.Username, UID: ui.UID, Groups: ui.Groups, Extra: ui.Extra}
	}
	k.mu.Lock()
	if k.tokens == nil || len(k.tokens) > 4096 {
		k.tokens = map[[32]byte]cached[*User]{}
	}
	k.tokens[key] = cached[*User]{u, err, now.Add(k.ttl(err == nil))}
	k.mu.Unlock()
	return u, err
}

func (k *KubeAuth) Authorize(ctx context.Context, u *User, a Access) error {
	attrs := kubeapi.ResourceAttributes{Namespace: a.Namespace, Verb: Verb, Group: ResourceGroup, Resource: Resource, Name: a.Name}
	if a.Payload {
		attrs.Subresource = SubPayload
	}
	key := fmt.Sprintf("%s\x00%s\x00%s\x00%s\x00%v", u.Name, u.UID, a.Namespace, a.Name, a.Payload)
	now := time.Now()
	k.mu.Lock()
	if c, ok := k.access[key]; ok && now.Before(c.expires) {
		k.mu.Unlock()
		return c.err
	}
	k.mu.Unlock()
	allowed, reason, err := k.Client.SubjectAccessReview(ctx, kubeapi.UserInfo{Username: u.Name, UID: u.UID, Groups: u.Groups, Extra: u.Extra}, attrs)
	if err != nil {
		return fmt.Errorf("access review: %w", err)
	}
	if !allowed {
		what := Resource + "." + ResourceGroup
		if a.Payload {
			what += "/" + SubPayload
		}
		where := "cluster-wide (a node)"
		if a.Namespace != "" {
			where = "in namespace " + a.Namespace
		}
		err = fmt.Errorf("%w: %s may not %s %s %s (grant it with a Role or ClusterRole)", ErrForbidden, u.Name, Verb, what, where)
		if reason != "" {
			err = fmt.Errorf("%w; the API server says: %s", err, reason)
		}
	}
	k.mu.Lock()
	if k.access == nil || len(k.access) > 4096 {
		k.access = map[string]cached[error]{}
	}
	k.access[key] = cached[error]{err: err, expires: now.Add(k.ttl(err == nil))}
	k.mu.Unlock()
	return err
}
