"""What tests need of the seeded Keystone: tokens, ids, and the gRPC metadata that carries a token."""

from __future__ import annotations

from .keystone import KeystoneServer

GrpcMetadata = tuple[tuple[str, str], ...]


class Identities:
    """Seeded identities: `token("alpha", "member")`, `project_id("beta")`, `metadata("alpha", "reader")`.

    Projects alpha and beta each have users <project>-reader, -member and -admin holding that role there;
    ("admin", "admin") is the bootstrap admin. Project gamma has only gamma-member and a tight quota of its
    own (image_count_total 2; keystone_config.PROJECT_LIMITS); every other project has the generous
    registered defaults (REGISTERED_LIMITS). Tokens are project-scoped and cached per (project, role).
    """

    def __init__(self, keystone: KeystoneServer) -> None:
        self.keystone = keystone

    def token(self, project: str, role: str) -> str:
        return self.keystone.token(project, role)

    def admin_token(self) -> str:
        return self.keystone.admin_token()

    def project_id(self, name: str) -> str:
        return self.keystone.project_id(name)

    def user_id(self, name: str) -> str:
        return self.keystone.user_id(name)

    def metadata(self, project: str, role: str) -> GrpcMetadata:
        """The gRPC call metadata that authenticates as <project>-<role>: `stub.X(req, metadata=...)`."""
        return (("x-auth-token", self.token(project, role)),)

    def __repr__(self) -> str:
        # Never the tokens.
        return f"Identities({self.keystone.url})"
