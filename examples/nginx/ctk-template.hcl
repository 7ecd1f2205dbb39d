# ctk template configuration for the nginx example (consul-template's format + ctk's checks).
# Paths are relative to the directory ctk runs in: the nginx prefix (run.sh cds there).
#
#   ctk template -config ctk-template.hcl -status-file status.json

consul {
  address = "127.0.0.1:18500"   # -consul-addr / CONSUL_HTTP_ADDR win over this
}

max_stale = "2s"

# Quiescence: reload at most once per burst of health flaps (0.5s after the last change,
# never more than 2s after the first).
wait {
  min = "500ms"
  max = "2s"
}

template {
  source      = "upstream.ctmpl"
  destination = "upstream.conf"

  # Test the staged file inside nginx.conf before it replaces upstream.conf; on failure the
  # live file is untouched, nginx keeps its config, and the error is in the log/status file.
  check = "sh ./nginx-check.sh {staged}"

  # Runs once per pass, after the file is installed. If it fails, ctk puts the previous
  # upstream.conf back and runs it again.
  command         = "nginx -q -p \"$PWD/\" -e logs/error.log -c nginx.conf -s reload"
  command_timeout = "10s"

  # Never install an empty file, or one with no backend at all: if Consul answers with nothing
  # (leader change, agent restart), keep serving the last good upstream list.
  allow_empty   = false
  min_instances = 1

  backup = true
}
