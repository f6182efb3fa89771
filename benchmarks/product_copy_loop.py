"""The loop a user would write instead of `aigc run pipelines/product_copy.yaml` (the baseline of scale.py).

Same libraries the engine uses (Jinja2's immutable sandbox, csv, json, re), same checks, same results
line per row. Usage: python product_copy_loop.py rows.csv results.jsonl
"""

import csv
import json
import re
import sys

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

env = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
brief = env.from_string('{{ product }} for {{ audience }}: {{ features | join(", ") }}. '
                        'Now only ${{ "%.2f" | format(price) }}.')
tagline = env.from_string("{{ product | upper }}: {{ copy | truncate(60) }}")
blocked = re.compile(r"(?<!\w)(?:guaranteed|miracle|cure)(?!\w)", re.I)

with open(sys.argv[1], newline="", encoding="utf-8") as rows, open(sys.argv[2], "w", encoding="utf-8") as out:
    for index, row in enumerate(csv.DictReader(rows)):
        row["features"] = row["features"].split("|")
        row["price"] = float(row["price"])
        copy = brief.render(row).strip()
        reasons = [f"too many words: {n} > 30"] if (n := len(copy.split())) > 30 else []
        if hits := sorted({m.group(0).lower() for m in blocked.finditer(copy)}):
            reasons.append("blocked term(s): " + ", ".join(hits))
        if reasons:
            record = {"row": index, "status": "filtered", "error": {"stage": "copy", "reason": "; ".join(reasons)}}
        else:
            line = tagline.render(product=row["product"], copy=copy).strip()
            record = {"row": index, "status": "done", "outputs": {"copy": copy, "tagline": line}}
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
