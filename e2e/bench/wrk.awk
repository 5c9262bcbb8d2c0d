# wrk's output (with --latency) to "P99_US REQ_PER_S REQUESTS", the one reading of it that
# e2e/bench/run and e2e/bench/veth-xdp share; a figure wrk did not print is 0.
$1 == "99%" { v = $2; if (v ~ /us$/) v += 0; else if (v ~ /ms$/) v *= 1000; else if (v ~ /s$/) v *= 1e6; p99 = v }
/^Requests\/sec/ { rps = $2 }
/ requests in / { n = $1 }
END { printf "%.0f %.0f %d\n", p99, rps, n }
