"""One date format everywhere in the admin: ISO 8601 with the zone (docs/operators.md#the-admin-today), not
"Dec. 1, 2026, 7:22 p.m." beside "2026-12-01 19:22". Times are shown in UTC (TIME_ZONE)."""

DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i T"
YEAR_MONTH_FORMAT = "Y-m"
MONTH_DAY_FORMAT = "m-d"
FIRST_DAY_OF_WEEK = 1
