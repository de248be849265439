"""The search cluster's section, `elasticsearch` or `opensearch`: where it is and how to log in.

Apart from the rest of the schema because the two engines share most keys but differ in how they
authenticate, and the rules on which credentials go together are most of what is here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, model_validator

from streamsync.config.values import _HttpUrl, _Section


class _ClusterConfig(_Section):
    """What every search cluster needs: where it is, and how to reach it safely."""

    hosts: list[_HttpUrl] = Field(min_length=1)
    username: str | None = Field(default=None, min_length=1)
    password: SecretStr | None = Field(default=None, min_length=1)
    ca_certs: Path | None = None
    verify_certs: bool = True
    request_timeout_seconds: float = Field(default=30, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _user_and_password_together(self) -> Self:
        if (self.username is None) != (self.password is None):
            missing = "password" if self.password is None else "username"
            raise ValueError(
                f"{missing} is missing: username and password go together "
                f"(set it in the file or as STREAMSYNC_ES_{missing.upper()})"
            )
        return self


class ElasticsearchConfig(_ClusterConfig):
    """An Elasticsearch 8.x or 9.x cluster (self-managed or Elastic Cloud)."""

    hosts: list[_HttpUrl] | None = Field(default=None, min_length=1)  # type: ignore[assignment]
    cloud_id: str | None = Field(default=None, min_length=1)
    """An Elastic Cloud deployment's Cloud ID, instead of hosts."""
    api_key: SecretStr | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_address_and_one_way_to_authenticate(self) -> ElasticsearchConfig:
        if (self.hosts is None) == (self.cloud_id is None):
            raise ValueError(
                "give either hosts (a list of URLs) or cloud_id (an Elastic Cloud deployment)"
                + (", not both" if self.hosts is not None else "")
            )
        if self.api_key is not None and self.username is not None:
            raise ValueError(
                "give either api_key or username and password, not both (check the file and "
                "STREAMSYNC_ES_API_KEY, STREAMSYNC_ES_USERNAME, STREAMSYNC_ES_PASSWORD)"
            )
        return self

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `elasticsearch.AsyncElasticsearch`; the only place secrets are
        revealed."""
        kwargs: dict[str, Any] = {
            "verify_certs": self.verify_certs,
            "request_timeout": self.request_timeout_seconds,
        }
        if self.hosts is not None:
            kwargs["hosts"] = list(self.hosts)
        if self.cloud_id is not None:
            kwargs["cloud_id"] = self.cloud_id
        if self.api_key is not None:
            kwargs["api_key"] = self.api_key.get_secret_value()
        if self.username is not None and self.password is not None:
            kwargs["basic_auth"] = (self.username, self.password.get_secret_value())
        if self.ca_certs is not None:
            kwargs["ca_certs"] = str(self.ca_certs)
        return kwargs


class SigV4Config(_Section):
    """Sign every request with AWS credentials (Amazon OpenSearch Service, OpenSearch Serverless).

    The credentials are the same standard chain as DynamoDB's (environment, profile, IRSA web
    identity, instance role), refreshed as they rotate; none are configured here."""

    region: str | None = Field(default=None, min_length=1)
    """None: aws.region."""
    service: Literal["es", "aoss"] = "es"
    """es: an OpenSearch Service domain; aoss: an OpenSearch Serverless collection."""


class OpenSearchConfig(_ClusterConfig):
    """An OpenSearch 2.x or 3.x cluster: self-managed, an Amazon OpenSearch Service domain, or an
    OpenSearch Serverless collection (of type SEARCH)."""

    aws_sigv4: SigV4Config | None = None

    @model_validator(mode="after")
    def _signed_or_basic(self) -> OpenSearchConfig:
        if self.aws_sigv4 is not None and self.username is not None:
            raise ValueError(
                "give either aws_sigv4 or username and password, not both (an Amazon OpenSearch "
                "Service domain with fine-grained access control maps the IAM role instead)"
            )
        return self
