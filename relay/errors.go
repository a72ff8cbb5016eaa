package relay

import "errors"

// Sentinel errors shared by the engine and its datapaths.
var (
	ErrFlowNotFound    = errors.New("flow not found")
	ErrUnsupportedFlow = errors.New("flow not supported by this datapath")
	ErrPortsExhausted  = errors.New("relay port pool exhausted")
	ErrSessionNotFound = errors.New("session not found")
	ErrSessionExists   = errors.New("session already exists")
	ErrDraining        = errors.New("relay is draining: no new sessions")
	ErrNoKernelPath    = errors.New("kernel datapath unavailable")
)

// Sentinel errors added with the engine.
var (
	ErrStreamNotFound = errors.New("stream not found")
	ErrEngineClosed   = errors.New("relay engine closed")
)
