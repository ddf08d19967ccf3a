//go:build tools

// Package tools pins flanneld, which scripts/install-deps builds from this
// module: go mod tidy keeps a requirement only for what some file imports.
package tools

import _ "github.com/flannel-io/flannel"
