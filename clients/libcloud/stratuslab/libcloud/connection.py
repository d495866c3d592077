"""HTTP to the StratusLab API (``/api/v1``, JSON, HTTP Basic): the Libcloud connection and
response classes, and the API's errors as exceptions. A controller's error is JSON
``{"code", "message"}``; 401 becomes Libcloud's ``InvalidCredsError``, anything else a
:class:`StratusLabError` carrying the HTTP status and the stable code."""

import base64
import json

from libcloud.common.base import ConnectionUserAndKey, JsonResponse
from libcloud.common.types import InvalidCredsError, ProviderError

API_PREFIX = "/api/v1"


class StratusLabError(ProviderError):
    """An error answer of the API: ``http_code`` (e.g. 409), ``code`` (e.g. ``wrong_state``)
    and the controller's message."""

    def __init__(self, message, http_code, code=None, driver=None):
        super().__init__(message, http_code, driver)
        self.code = code

    def __str__(self):
        return self.value


class StratusLabResponse(JsonResponse):
    def success(self):
        return 200 <= self.status < 300

    def parse_body(self):
        if not self.body:
            return None
        content_type = self.headers.get("content-type", "")
        if "json" not in content_type:
            return self.body
        return super().parse_body()

    def parse_error(self):
        try:
            error = json.loads(self.body) if self.body else {}
        except ValueError:
            error = {}
        message = error.get("message") or f"HTTP {self.status}"
        if self.status == 401:
            raise InvalidCredsError(message)
        raise StratusLabError(message, self.status, error.get("code"), self.connection.driver)


class StratusLabConnection(ConnectionUserAndKey):
    """A connection to one controller node (``user_id``/``key`` are the username and
    password)."""

    responseCls = StratusLabResponse
    def __init__(self, *args, ca_certificate=None, **kwargs):
        #: The site CA file to verify the controller's certificate with (None: the system's
        #: trusted roots).
        self.ca_certificate = ca_certificate
        super().__init__(*args, **kwargs)

    def connect(self, *args, **kwargs):
        connection = super().connect(*args, **kwargs)
        if self.ca_certificate:
            self.connection.ca_cert = self.ca_certificate
        return connection

    def add_default_headers(self, headers):
        credentials = f"{self.user_id}:{self.key}".encode("utf-8")
        headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
        headers.setdefault("Accept", "application/json")
        return headers

    def api(self, path, method="GET", body=None, headers=None, params=None):
        """A request to ``/api/v1`` + `path`; `body` is sent as JSON."""
        headers = dict(headers or {})
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body)
        return self.request(
            API_PREFIX + path, method=method, data=data, headers=headers, params=params
        )
