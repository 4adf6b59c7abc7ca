from tests.published_sites import s3_site, static_site  # noqa: F401 - fixtures
