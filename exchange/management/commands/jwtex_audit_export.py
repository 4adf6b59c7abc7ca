"""``manage.py jwtex_audit_export``: audit records as JSON lines on standard output, for a SIEM.

Standard output carries the records and nothing else (``jwtex_audit_export > audit.jsonl``);
a bad argument is an error on standard error, a non-zero exit, and nothing on standard output.
"""

from __future__ import annotations

from argparse import RawDescriptionHelpFormatter
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError, DjangoHelpFormatter

from exchange.services.audit_export import (
    EXPORT_FIELDS,
    audit_records_jsonl,
    audit_records_select,
)
from tenants.models import Tenant


def parse_time(value: str, *, option: str) -> datetime:
    """ISO 8601: a date (midnight UTC) or a date and time; without an offset it is UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(
            f"{option} {value!r} is not an ISO 8601 date or time (e.g. 2025-06-01 or 2025-06-01T12:00:00Z)."
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _help() -> str:
    fields = "\n".join(f"  {name:<15} {meaning}" for name, meaning in EXPORT_FIELDS.items())
    return (
        "Write audit records (all tenants, or --tenant's) as JSON lines to standard output, oldest first.\n\n"
        "Each line is one JSON object with always these fields, in this order, null where the record holds\n"
        "nothing; times are ISO 8601 in UTC (2025-06-01T12:00:00.000000Z). No token is ever in a record.\n\n"
        f"{fields}"
    )


class _Formatter(DjangoHelpFormatter, RawDescriptionHelpFormatter):
    """Django's option order, with the field list kept as written."""


class Command(BaseCommand):
    help = _help()

    def create_parser(self, prog_name, subcommand, **kwargs):
        return super().create_parser(prog_name, subcommand, formatter_class=_Formatter, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("--tenant", metavar="SLUG", help="only this tenant's records")
        parser.add_argument("--since", metavar="ISO", help="records at or after this time (date or date and time, UTC)")
        parser.add_argument("--until", metavar="ISO", help="records before this time (date or date and time, UTC)")

    def handle(self, *args, tenant: str | None, since: str | None, until: str | None, **options):
        start = parse_time(since, option="--since") if since else None
        end = parse_time(until, option="--until") if until else None
        if start is not None and end is not None and start >= end:
            raise CommandError(f"--since {since} is not before --until {until}: nothing could be exported.")
        chosen = None
        if tenant is not None:
            chosen = Tenant.objects.filter(slug=tenant).first()
            if chosen is None:
                raise CommandError(f"unknown tenant {tenant!r}; nothing was exported.")
        for line in audit_records_jsonl(audit_records_select(tenant=chosen, since=start, until=end)):
            self.stdout.write(line, ending="")
        self.stdout.flush()
