package containerd

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Image is a single-layer image holding one static binary, written as an OCI
// image layout and imported into the runtime: the lab cannot pull from a
// registry, and a static binary needs nothing else in its root filesystem.
type Image struct {
	// Ref names the image: "REPOSITORY:TAG" with a domain in the
	// repository ("netdiag.lab/server:1"), so that no registry default
	// (docker.io/library/) is prepended to it.
	Ref string
	// Binary is the path of a static executable on this machine; it is
	// stored as /NAME in the image, NAME being its base name.
	Binary string
	// Entrypoint defaults to ["/NAME"].
	Entrypoint []string
	// Cmd are the default arguments (a pod's Args replace them).
	Cmd []string
	// Env is the image's environment ("KEY=VALUE").
	Env []string
}

// Default image references. The tag names the layout, not the content: a
// new import replaces the image of the same name.
const (
	PauseRef  = "netdiag.lab/pause:1"
	ServerRef = "netdiag.lab/server:1"
)

// Import paths of the binaries the default images hold.
const (
	PausePackage  = "github.com/netdiag/netdiag/lab/containerd/pause"
	ServerPackage = "github.com/netdiag/netdiag/lab/containerd/server"
)

// splitRef splits "repo:tag" and checks that the repository starts with a
// domain, which keeps containerd and the CRI plugin from normalising the name
// into docker.io/library/...
func splitRef(ref string) (repo, tag string, err error) {
	i := strings.LastIndexByte(ref, ':')
	if i <= 0 || strings.Contains(ref[i:], "/") || strings.Contains(ref, "@") {
		return "", "", fmt.Errorf("image reference %q: want DOMAIN/PATH:TAG (e.g. %q), without a digest", ref, ServerRef)
	}
	repo, tag = ref[:i], ref[i+1:]
	domain, _, ok := strings.Cut(repo, "/")
	if !ok || !strings.ContainsAny(domain, ".:") && domain != "localhost" {
		return "", "", fmt.Errorf("image reference %q: the repository must start with a domain (e.g. %q) so that it is not taken for a Docker Hub name", ref, ServerRef)
	}
	if tag == "" {
		return "", "", fmt.Errorf("image reference %q has an empty tag", ref)
	}
	return repo, tag, nil
}

// OCI media types and annotations (image-spec v1).
const (
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayerGz  = "application/vnd.oci.image.layer.v1.tar+gzip"
	annRefName    = "org.opencontainers.image.ref.name"
	// annImageName is containerd's own annotation for the full name; the
	// OCI one carries only the tag, as the image-spec intends.
	annImageName = "io.containerd.image.name"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type blob struct {
	digest string
	data   []byte
}

func newBlob(data []byte) blob {
	sum := sha256.Sum256(data)
	return blob{digest: "sha256:" + hex.EncodeToString(sum[:]), data: data}
}

// epoch is the time stamp of every file and of the image: the same binary
// gives the same digests, so an unchanged image imports as a no-op.
var epoch = time.Unix(0, 0).UTC()

// WriteImage writes img as a tar of an OCI image layout (oci-layout,
// index.json, blobs/sha256/...), the format `ctr images import` reads. It
// returns the manifest digest.
func WriteImage(w io.Writer, img Image) (string, error) {
	_, tag, err := splitRef(img.Ref)
	if err != nil {
		return "", err
	}
	bin, err := os.ReadFile(img.Binary)
	if err != nil {
		return "", fmt.Errorf("image %s: read binary: %w", img.Ref, err)
	}
	name := filepath.Base(img.Binary)
	var layerTar bytes.Buffer
	tw := tar.NewWriter(&layerTar)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: int64(len(bin)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return "", err
	}
	if _, err := tw.Write(bin); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	diffID := newBlob(layerTar.Bytes()).digest
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if err != nil {
		return "", err
	}
	zw.ModTime = epoch
	if _, err := zw.Write(layerTar.Bytes()); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	layer := newBlob(gz.Bytes())

	entry := img.Entrypoint
	if len(entry) == 0 {
		entry = []string{"/" + name}
	}
	env := img.Env
	if len(env) == 0 {
		env = []string{"PATH=/"}
	}
	type imageConfig struct {
		Entrypoint []string `json:"Entrypoint"`
		Cmd        []string `json:"Cmd,omitempty"`
		Env        []string `json:"Env"`
		WorkingDir string   `json:"WorkingDir"`
	}
	cfgJSON, err := json.Marshal(struct {
		Created      time.Time   `json:"created"`
		Architecture string      `json:"architecture"`
		OS           string      `json:"os"`
		Config       imageConfig `json:"config"`
		RootFS       struct {
			Type    string   `json:"type"`
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}{
		Created: epoch, Architecture: runtime.GOARCH, OS: "linux",
		Config: imageConfig{Entrypoint: entry, Cmd: img.Cmd, Env: env, WorkingDir: "/"},
		RootFS: struct {
			Type    string   `json:"type"`
			DiffIDs []string `json:"diff_ids"`
		}{Type: "layers", DiffIDs: []string{diffID}},
	})
	if err != nil {
		return "", err
	}
	cfg := newBlob(cfgJSON)
	manJSON, err := json.Marshal(struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Config        descriptor   `json:"config"`
		Layers        []descriptor `json:"layers"`
	}{
		SchemaVersion: 2, MediaType: mediaManifest,
		Config: descriptor{MediaType: mediaConfig, Digest: cfg.digest, Size: int64(len(cfg.data))},
		Layers: []descriptor{{MediaType: mediaLayerGz, Digest: layer.digest, Size: int64(len(layer.data))}},
	})
	if err != nil {
		return "", err
	}
	man := newBlob(manJSON)
	indexJSON, err := json.Marshal(struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Manifests     []descriptor `json:"manifests"`
	}{
		SchemaVersion: 2, MediaType: "application/vnd.oci.image.index.v1+json",
		Manifests: []descriptor{{
			MediaType: mediaManifest, Digest: man.digest, Size: int64(len(man.data)),
			Annotations: map[string]string{annRefName: tag, annImageName: img.Ref},
			Platform:    &platform{Architecture: runtime.GOARCH, OS: "linux"},
		}},
	})
	if err != nil {
		return "", err
	}

	out := tar.NewWriter(w)
	file := func(name string, data []byte) error {
		if err := out.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := out.Write(data)
		return err
	}
	dir := func(name string) error {
		return out.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX})
	}
	steps := []func() error{
		func() error { return file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)) },
		func() error { return dir("blobs/") },
		func() error { return dir("blobs/sha256/") },
	}
	for _, b := range []blob{layer, cfg, man} {
		steps = append(steps, func() error { return file(path.Join("blobs/sha256", strings.TrimPrefix(b.digest, "sha256:")), b.data) })
	}
	steps = append(steps, func() error { return file("index.json", indexJSON) }, out.Close)
	for _, step := range steps {
		if err := step(); err != nil {
			return "", fmt.Errorf("image %s: write layout: %w", img.Ref, err)
		}
	}
	return man.digest, nil
}

// BuildStatic builds a main package (an import path or a ./relative path,
// resolved from dir, which must lie inside a module that has it) into a
// static binary at out: CGO_ENABLED=0 for the machine's architecture, so it
// runs in an image with nothing else in it.
func BuildStatic(ctx context.Context, dir, pkg, out string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("build %s: the go command is not in PATH (images are built from source at run time): %w", pkg, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gobin, "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	cmd.WaitDelay = time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		return fmt.Errorf("build %s (CGO_ENABLED=0 go build in %s): %w: %s", pkg, dir, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
