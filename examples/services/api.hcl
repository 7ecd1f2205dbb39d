# HCL works as well as JSON, exactly as Consul reads it.
service {
  name = "api"
  id   = "api-1"
  port = 9090
  tags = ["internal"]
  check {
    name     = "api tcp"
    tcp      = "127.0.0.1:9090"
    interval = "10s"
    timeout  = "1s"
  }
}
