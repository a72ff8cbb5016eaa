// Package bpf is the kernel datapath: XDP and tc programs that relay RTP
// flows in the kernel, and the Go loader that attaches them, pins them so
// media survives a daemon restart, and manages the flow map.
//
// Entry points: Open attaches (or takes over pinned state) and returns a
// Kernel, which is a relay.Datapath; OpenPinnedMaps reads and edits the
// pinned flows and counters with no daemon running; Uninstall detaches
// and removes everything pinned; LoadPrograms loads both programs into
// private maps for BPF_PROG_TEST_RUN.
//
// C sources: maps.h (maps, layouts, counters), parse.h, csum.h, relay.h
// (the shared decision), xdp.c and tc.c (one hook each). The generated
// *_bpfel.go/.o files are committed so building needs no clang.
package bpf

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package bpf -type flow_key -type flow_value xdp xdp.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package bpf tc tc.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu
