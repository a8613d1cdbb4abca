"""glance-grpc-gateway: a gRPC front door for OpenStack Glance images."""
