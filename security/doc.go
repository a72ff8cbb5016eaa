// Package security holds sipd's attack tests: each one runs a real sipd in
// a network namespace, sends an attack from a namespace of its own, checks
// that nothing got through, and checks that a legitimate user is still
// served. They need root; README's Security section lists them with the
// threat each covers.
package security
