// Package bpf is the kernel datapath: XDP and tc programs that relay RTP
// flows in the kernel, and the Go loader that attaches them, pins them so
// media survives a daemon restart, and manages the flow map.
package bpf

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package bpf -type flow_key -type flow_value xdp xdp.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package bpf tc tc.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu
