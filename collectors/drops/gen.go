package drops

// The object is generated and committed, so building netdiag needs no clang.
// To regenerate: apt-get install clang llvm libbpf-dev, then go generate.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type drop_event -type flow_key bpf bpf/drops.c
