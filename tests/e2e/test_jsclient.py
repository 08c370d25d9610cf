"""The matrix-js-sdk person on its own, without the bot: proof that the harness is sound.

Two cross-signed persons in "exclude insecure devices" mode talk in an encrypted DM (text,
a reply, an edit, an encrypted file); a device that is not cross-signed gets no room key
from such a person, and its own messages are not trusted by one. The install step is
checked with a fake `npm` that records its calls.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.conftest import MakePerson
from tests.e2e.js_person import JsClientUnavailable, ensure_installed, sha256_hex

WITHHELD = "MEGOLM_KEY_WITHHELD_FOR_UNVERIFIED_DEVICE"
UNSIGNED = "UNSIGNED_SENDER_DEVICE"


async def test_two_signed_persons_exchange_encrypted_text_edits_and_files(
    make_person: MakePerson,
) -> None:
    alice = await make_person("alice")
    bob = await make_person("bob")
    assert alice.cross_signed and bob.cross_signed

    room = await alice.create_dm(bob.user_id)
    assert [room] == await bob.accept_invites(inviter=alice.user_id)
    assert await alice.device_signed(bob.user_id, bob.device_id)
    assert await bob.is_encrypted(room)
    first = await alice.send(room, "hello bob")
    [seen] = await bob.wait(room_id=room, sender=alice.user_id, text="hello bob")
    assert seen["event_id"] == first and seen["encrypted"] and not seen["undecryptable"]

    answer = await bob.send(room, "hi alice", reply_to=first)
    assert (await alice.wait_reply(first))["event_id"] == answer
    await bob.send(room, "hi alice, edited", replaces=answer)
    [edited] = await alice.wait(reply_to=first, text="hi alice, edited")
    assert edited["event_id"] == answer and edited["edits"] == 1
    from_bob = await alice.events(room_id=room, sender=bob.user_id, type="m.room.message")
    assert [e["event_id"] for e in from_bob] == [answer]  # the edit is folded into it

    data = bytes(range(256)) * 40
    sent = await alice.send_file(room, "blob.bin", data)
    [file_event] = await bob.wait(room_id=room, msgtype="m.file")
    assert file_event["event_id"] == sent
    assert "url" not in file_event["content"] and file_event["content"]["file"]["v"] == "v2"
    got = await bob.download(sent)
    assert got["encrypted"] and got["sha256"] == sha256_hex(data) and got["size"] == len(data)

    back = b"and one back\n"
    reply_file = await bob.send_file(room, "back.txt", back, "text/plain")
    await alice.wait(room_id=room, msgtype="m.file", sender=bob.user_id)
    assert (await alice.download(reply_file))["sha256"] == sha256_hex(back)

    for person, other in ((alice, bob), (bob, alice)):
        assert (await person.undecryptable(sender=other.user_id))["ever"] == 0


@pytest.mark.parametrize("strict", [True, False], ids=["only-signed", "all-devices"])
async def test_a_device_that_is_not_cross_signed_is_excluded_in_only_signed_mode(
    make_person: MakePerson, strict: bool
) -> None:
    alice = await make_person("alice", only_signed=strict)
    bob = await make_person("bob")
    # Carol's client never cross-signs (and so cannot be strict itself: Rust crypto refuses
    # to encrypt in only-signed mode without its own cross-signing).
    carol = await make_person("carol", cross_signing=False, only_signed=False)
    assert not carol.cross_signed
    assert not await alice.device_signed(carol.user_id, carol.device_id)

    room = await alice.create_dm(bob.user_id)
    await bob.accept_invites(inviter=alice.user_id)
    await alice.invite(room, carol.user_id)
    await carol.accept_invites(inviter=alice.user_id)
    await alice.wait(room_id=room, type="m.room.member", sender=carol.user_id)

    secret = await alice.send(room, "for signed devices only")
    from_carol = await carol.send(room, "carol speaking")

    # The signed device always reads alice.
    await bob.wait(room_id=room, text="for signed devices only")
    if strict:
        # The unsigned device is refused the key, and alice does not trust what it sends.
        [withheld] = await carol.wait(room_id=room, sender=alice.user_id, failure=WITHHELD)
        assert withheld["event_id"] == secret and withheld["undecryptable"]
        [untrusted] = await alice.wait(room_id=room, sender=carol.user_id, undecryptable=True)
        assert untrusted["event_id"] == from_carol and untrusted["failure"] == UNSIGNED
        assert (await alice.undecryptable(sender=carol.user_id))["now"] == 1
    else:
        await carol.wait(room_id=room, sender=alice.user_id, text="for signed devices only")
        await alice.wait(room_id=room, sender=carol.user_id, text="carol speaking")
        assert (await carol.undecryptable(sender=alice.user_id))["ever"] == 0


# -- installation -------------------------------------------------------------------------------


def _fake_tools(bin_dir: Path, node_version: str) -> Path:
    """`node` printing `node_version` and an `npm` that records its calls and "installs"."""
    calls = bin_dir / "npm-calls"
    bin_dir.mkdir()
    (bin_dir / "node").write_text(f"#!/bin/sh\necho {node_version}\n")
    (bin_dir / "npm").write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\nmkdir -p node_modules\n'
        "touch node_modules/.package-lock.json\n"
    )
    for tool in ("node", "npm"):
        (bin_dir / tool).chmod(0o755)
    return calls


def test_install_runs_npm_ci_only_when_the_lock_is_newer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fake_tools(tmp_path / "bin", "v20.1.0")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")  # the fakes come first
    project = tmp_path / "jsclient"
    project.mkdir()
    lock = project / "package-lock.json"
    lock.write_text("{}")

    ensure_installed(project)
    ensure_installed(project)  # installed and current: no npm at all (works offline)
    assert calls.read_text().splitlines() == ["ci --no-audit --no-fund --loglevel=error"]

    installed = project / "node_modules" / ".package-lock.json"
    os.utime(installed, (lock.stat().st_mtime - 60,) * 2)  # the lock changed since
    ensure_installed(project)
    assert len(calls.read_text().splitlines()) == 2


@pytest.mark.parametrize(("tools", "reason"), [((), "node and npm not found"), (("old",), "old")])
def test_missing_or_old_node_is_reported_not_installed_around(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tools: tuple[str, ...], reason: str
) -> None:
    bin_dir = tmp_path / "bin"
    if tools:
        _fake_tools(bin_dir, "v18.20.0")
    else:
        bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))

    with pytest.raises(JsClientUnavailable, match=reason):
        ensure_installed(tmp_path)
