"""A Zendesk client not written here (zenpy, from PyPI) against the sandbox.

Run by tests/third_party/run.sh, which starts `zd-retention sandbox` and sets
ZENPY_FORCE_NETLOC / ZENPY_FORCE_SCHEME, zenpy's own switches for a host that
is not *.zendesk.com. Nothing of zenpy is changed or patched: it lists,
restores, purges and reads job statuses as it would against Zendesk.
"""

import os
import sys
import time

from zenpy import Zenpy

expected = int(os.environ["EXPECTED_TICKETS"])
client = Zenpy(subdomain="sandbox", email="check@example.com", token="third-party-token")


def deleted_ids():
    return [t.id for t in client.tickets.deleted()]


first = list(client.tickets.deleted())
ids = [t.id for t in first]
assert len(ids) == expected, f"listed {len(ids)} deleted tickets, expected {expected}"
assert len(set(ids)) == len(ids), "a ticket was listed twice"
print(f"zenpy listed {len(ids)} deleted tickets")

# restore two by id
client.tickets.restore(ids[:2])
after_restore = deleted_ids()
assert ids[0] not in after_restore and ids[1] not in after_restore, "restore did not take"
print(f"zenpy restored {ids[:2]}")

# purge three: zenpy sends destroy_many and returns the job status
tickets = [t for t in first if t.id in ids[2:5]]
job = client.tickets.permanently_delete(tickets)
print(f"zenpy purge job {job.id} is {job.status}")
for _ in range(100):
    job = client.job_status(id=job.id)
    if job.status in ("completed", "failed", "killed"):
        break
    time.sleep(0.1)
assert job.status == "completed", f"job ended {job.status}"
assert job.results.get("success") is True if isinstance(job.results, dict) else True
left = deleted_ids()
for gone in ids[2:5]:
    assert gone not in left, f"ticket {gone} still listed after its purge job completed"
assert len(left) == expected - 5, f"{len(left)} left, expected {expected - 5}"
print(f"zenpy purged {ids[2:5]}; job status read back as {job.status}; {len(left)} deleted tickets left")
print("third-party client check: OK")
sys.exit(0)
