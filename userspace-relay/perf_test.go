package usrelay

const perfRoleEnv = "SIPXDP_PERF_ROLE"

func perfChild(role string) int { return 2 }
