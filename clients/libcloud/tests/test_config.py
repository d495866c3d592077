"""The driver reads the command line client's configuration as the client does: the chosen
section over ``[default]``, ``STRATUSLAB_*`` over the file, endpoints in every form."""

import pytest

from stratuslab.libcloud import config

FILE = """\
[default]
endpoint = default.example.org
username = alice
password = secret
selected_section = fav

[fav]
endpoint = https://fav.example.org:9000/prefix/
username = bob

[other]
endpoint = a.example.org,b.example.org:8441
"""


@pytest.fixture
def home(tmp_path):
    path = tmp_path / ".stratuslab" / "stratuslab-user.cfg"
    path.parent.mkdir()
    path.write_text(FILE)
    return tmp_path


def env(home, **more):
    return {"HOME": str(home), **more}


def test_the_selected_section_wins_over_default(home):
    c = config.load(None, env(home))
    assert c.section == "fav"
    assert c.endpoints == [config.Endpoint(True, "fav.example.org", 9000, "/prefix")]
    assert (c.username, c.password) == ("bob", "secret")


def test_a_named_section_and_default_alone(home):
    c = config.load("default", env(home))
    assert c.section is None
    assert c.endpoints == [config.Endpoint(True, "default.example.org", 8440)]
    c = config.load("other", env(home))
    assert [e.port for e in c.endpoints] == [8440, 8441]
    assert c.username == "alice"


def test_the_environment_wins_over_the_file(home):
    c = config.load(
        None,
        env(
            home,
            STRATUSLAB_USER_CONFIG_SECTION="other",
            STRATUSLAB_ENDPOINT="127.0.0.1:1234",
            STRATUSLAB_PASSWORD="from-env",
            STRATUSLAB_CA_CERTIFICATE="/site/ca.pem",
        ),
    )
    assert c.ca_certificate == "/site/ca.pem"
    assert c.section == "other"
    assert c.endpoints == [config.Endpoint(True, "127.0.0.1", 1234)]
    assert c.password == "from-env"


def test_an_unknown_section_or_no_endpoint_is_an_error(home, tmp_path):
    with pytest.raises(config.ConfigError, match=r"section \[nope\] not found"):
        config.load("nope", env(home))
    with pytest.raises(config.ConfigError, match="no cloud endpoint configured"):
        config.load(None, {"STRATUSLAB_CONFIG": str(tmp_path / "missing.cfg")})
    with pytest.raises(config.ConfigError, match="credentials"):
        config.Endpoint.parse("http://u:p@host")


def test_keys_before_any_section_belong_to_default(tmp_path):
    path = tmp_path / "user.cfg"
    path.write_text("endpoint = early.example.org\n[x]\nusername = carol\n")
    c = config.load("x", {"STRATUSLAB_CONFIG": str(path)})
    assert c.endpoints[0].host == "early.example.org"
    assert c.username == "carol"


def test_an_unedited_reference_file_configures_nothing(tmp_path):
    """The reference file ``stratus-copy-config`` installs has every value commented out, so
    a copy left as it is sends no placeholder credentials."""
    reference = config_reference()
    path = tmp_path / "user.cfg"
    path.write_text(reference)
    with pytest.raises(config.ConfigError, match="no cloud endpoint configured"):
        config.load(None, {"STRATUSLAB_CONFIG": str(path)})
    c = config.load(None, {"STRATUSLAB_CONFIG": str(path), "STRATUSLAB_ENDPOINT": "h"})
    assert (c.username, c.password) == (None, None)


def config_reference():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]
    return (repo / "cli" / "stratuslab-user.cfg.ref").read_text()


def test_sections_are_listed_default_first(home):
    assert config.sections(env(home)) == ["default", "fav", "other"]
