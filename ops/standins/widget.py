"""Book (or list) records in the running YClients stand-in, as the salon's online widget and administrators do:
what the demo uses to show a record made in YClients reaching PostgreSQL through a webhook.

    python -m ops.standins.widget --company 962302 --staff 2 --service 1001 --at 2026-12-02T15:00 --phone +79990001122
    python -m ops.standins.widget --company 962302 --list
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

HEADERS = {
    "Accept": "application/vnd.yclients.v2+json",
    "Content-Type": "application/json",
    "Authorization": "Bearer partner-token, User user-token",
}


def call(url: str, method: str = "GET", body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, HEADERS, method=method)  # noqa: S310  (the local stand-in)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8081/api/v1")
    parser.add_argument("--company", type=int, default=962302)
    parser.add_argument("--list", action="store_true", help="print the calendar's records made since start")
    parser.add_argument("--staff", type=int)
    parser.add_argument("--service", type=int, default=1001)
    parser.add_argument("--at", help="local (Moscow) time, e.g. 2026-12-02T15:00")
    parser.add_argument("--phone", default="+79990001122")
    parser.add_argument("--name", default="Клиент виджета")
    args = parser.parse_args()
    if args.list:
        page, today = 1, datetime.now(ZoneInfo("Europe/Moscow")).date().isoformat()
        while True:
            status, answer = call(f"{args.url}/records/{args.company}?count=200&page={page}&start_date={today}")
            if status != 200 or not (answer or {}).get("success"):
                print(f"{status} {json.dumps(answer, ensure_ascii=False)}", file=sys.stderr)
                return 1
            rows = answer.get("data") or []
            for record in rows:
                if int(record["id"]) > 9_500_000:  # made through the API or the widget, not generated
                    print(f"{record['id']} {record['datetime']} staff {record['staff_id']} api_id {record['api_id']!r}")
            if not rows:
                return 0
            page += 1
            time.sleep(0.5)  # the stand-in keeps YClients' limit of 5 requests a second
    if args.staff is None or args.at is None:
        parser.error("--staff and --at are required to book")
    start = datetime.fromisoformat(args.at).replace(tzinfo=ZoneInfo("Europe/Moscow"))
    status, answer = call(
        f"{args.url}/records/{args.company}",
        "POST",
        {
            "staff_id": args.staff,
            "services": [{"id": args.service}],
            "client": {"phone": args.phone, "name": args.name},
            "datetime": start.isoformat(),
            "seance_length": 3600,
        },
    )
    print(status, json.dumps(answer, ensure_ascii=False))
    return 0 if status == 201 else 1


if __name__ == "__main__":
    sys.exit(main())
