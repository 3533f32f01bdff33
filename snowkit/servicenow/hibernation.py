"""Recognise a hibernating ServiceNow developer instance.

A sleeping personal developer instance (PDI) does not answer API calls with an error: it
answers **200 with an HTML page** ("Instance Hibernating page"). Clients that only look at the
status code then fail later with a confusing JSON decode error. We check the content type and
the page text once, on responses that should have been JSON.
"""

from __future__ import annotations

import re

import requests

_MARKERS = re.compile(
    rb"hibernat|instance is (?:sleeping|waking)|wake (?:up )?your instance", re.IGNORECASE
)

GUIDANCE = (
    "the instance is hibernating (a developer instance sleeps after inactivity). Wake it: sign "
    "in at https://developer.servicenow.com, open 'My instance' and choose 'Wake up instance'; "
    "it takes a few minutes. Then run again (or set a hibernation wait to keep checking)."
)


def is_hibernation_page(response: requests.Response) -> bool:
    """True when ``response`` is the HTML hibernation page instead of an API answer."""
    content_type = response.headers.get("Content-Type", "").lower()
    if "html" not in content_type:
        return False
    return bool(_MARKERS.search(response.content[:65536]))


def is_unexpected_html(response: requests.Response) -> bool:
    """An HTML page where the REST API promised JSON (a proxy, an SSO or maintenance page)."""
    content_type = response.headers.get("Content-Type", "").lower()
    return "html" in content_type
