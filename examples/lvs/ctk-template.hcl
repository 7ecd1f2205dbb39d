# ctk template for an LVS director. Use ONE of the two templates: keepalived (it owns the IPVS
# table and health-checks the real servers itself) or plain ipvsadm rules. Both are checked
# before they replace the live file; a failed reload puts the previous file back.
#
#   ctk template -config /etc/ctk/lvs.hcl -status-file /run/ctk-template.json
#
# Install first (see README.md): keepalived.ctmpl, ipvsadm.rules.ctmpl -> /etc/ctk/lvs/,
# ipvsadm-check.py -> /usr/local/bin/ (checks run in the destination's directory, so the
# checker is found through PATH).

consul {
  address = "127.0.0.1:8500"
}

wait {
  min = "2s"    # one reload per burst of health changes
  max = "10s"
}

template {
  source        = "/etc/ctk/lvs/keepalived.ctmpl"
  destination   = "/etc/keepalived/keepalived.conf"
  check         = "keepalived -t -f {staged}"
  command       = "systemctl reload keepalived"
  min_instances = 1      # never drop the last real server because Consul answered with nothing
  allow_empty   = false
  backup        = true
}

template {
  source        = "/etc/ctk/lvs/ipvsadm.rules.ctmpl"
  destination   = "/etc/ipvsadm.rules"
  check         = "ipvsadm-check.py {staged}"
  # Clearing then restoring leaves IPVS empty for a moment; acceptable for a small table.
  command       = "ipvsadm -C && ipvsadm-restore < /etc/ipvsadm.rules"
  min_instances = 1
  allow_empty   = false
  backup        = true
}
