"""`glance-grpc`: the command-line client of glance-grpc-gateway, built on `gateway.client`.

    glance-grpc --address localhost:50051 upload --name cirros --file cirros.img --property os_distro=cirros
    glance-grpc list --long -f json
    glance-grpc download <id> --file cirros.img

Modules: options (command line and environment), output (table/json/yaml/value), progress (tqdm bars on
stderr), commands (metadata commands), transfer (upload, download, stage), __main__ (dispatch and errors).
"""
