"""How clients connect: the lines printed on the first start and by ``davfs windows-setup``.

Kept in one place so the README, the start-up banner and the Windows registry file give
the same commands for the same server.
"""

from __future__ import annotations

from davfs.auth import GeneratedUser
from davfs.config import DavfsConfig

FILE_SIZE_LIMIT = 0xFFFFFFFF
"""Windows' largest FileSizeLimitInBytes (4 GiB - 1); its default, 50,000,000, refuses
any file over 47.7 MiB."""

FILE_ATTRIBUTES_LIMIT = 50_000_000
"""FileAttributesLimitInBytes for big folders. A davfs listing costs 744-834 bytes per
entry (bench/propfind_size.py), so Windows' default of 1,000,000 bytes stops at about
1,200 entries; this allows about 60,000."""

WEBCLIENT_KEY = r"HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Services\WebClient\Parameters"


def first_user_banner(config: DavfsConfig, user: GeneratedUser) -> str:
    """Credentials of the generated user and ready-to-paste commands for each system,
    when it was just made; on later starts only where they are kept, so the password
    does not end up in every start's log (journald, docker logs)."""
    url = config.url
    if not user.new:
        return (
            f"No users are configured; log in as {user.name!r} with the password kept in {user.path} "
            "(`davfs windows-setup` prints the commands to connect)."
        )
    return "\n".join(
        [
            "",
            f"No users are configured, so davfs made one (kept in {user.path}, readable only by you):",
            f"  URL:      {url}",
            f"  user:     {user.name}",
            f"  password: {user.password}",
            "",
            *connect_commands(config, user.name, user.password),
            "",
            "Add your own users under davfs.users in wsgidav.yaml (see README).",
            "",
        ]
    )


def connect_commands(config: DavfsConfig, user: str, password: str) -> list[str]:
    url = config.url
    host_port = url.split("://", 1)[1].rstrip("/")
    dav_scheme = "davs" if config.tls else "dav"
    return [
        "Windows (cmd; run `davfs windows-setup` once for files over 47 MiB):",
        f"  net use Z: {url} /user:{user} {password} /persistent:yes",
        "macOS (Finder > Go > Connect to Server, or):",
        f"  mkdir -p ~/davfs && mount_webdav -s -i {url} ~/davfs",
        "Linux (GNOME Files / gio, or davfs2):",
        f"  gio mount {dav_scheme}://{user}@{host_port}/",
        f"  sudo mount -t davfs {url} /mnt/davfs",
        "rclone:",
        f"  rclone config create davfs webdav url={url} vendor=rclone user={user} "
        f"pass=$(rclone obscure '{password}')",
    ]


def windows_registry_file(config: DavfsConfig) -> str:
    """A .reg file with the WebClient settings davfs needs; regedit wants CRLF lines."""
    basic_note = (
        "; BasicAuthLevel stays at Windows' default (1: Basic only over https), which this server uses."
        if config.tls
        else "; BasicAuthLevel is left alone: over http davfs authenticates with Digest, which Windows\r\n"
        "; accepts by default. Setting it to 2 would send passwords in the clear."
    )
    lines = [
        "Windows Registry Editor Version 5.00",
        "",
        f"; WebClient settings for davfs at {config.url}",
        "; FileSizeLimitInBytes: largest file Windows will copy (default 50,000,000 bytes; max 4 GiB - 1).",
        "; FileAttributesLimitInBytes: largest folder listing (default 1,000,000 bytes, ~1,200 entries).",
        basic_note,
        "; Restart the WebClient service afterwards: net stop webclient & net start webclient",
        "",
        f"[{WEBCLIENT_KEY}]",
        f'"FileSizeLimitInBytes"=dword:{FILE_SIZE_LIMIT:08x}',
        f'"FileAttributesLimitInBytes"=dword:{FILE_ATTRIBUTES_LIMIT:08x}',
        "",
    ]
    return "\r\n".join(lines)


def windows_setup_text(config: DavfsConfig, reg_path: str, user: str) -> str:
    return "\n".join(
        [
            f"Windows setup for davfs at {config.url}",
            "",
            "1. Start the WebClient service now and at every boot (cmd as Administrator):",
            "     sc config webclient start= auto",
            "     net start webclient",
            "",
            f"2. Raise Windows' limits: double-click {reg_path}, or run as Administrator:",
            f'     reg add "{WEBCLIENT_KEY}" /v FileSizeLimitInBytes /t REG_DWORD /d {FILE_SIZE_LIMIT} /f',
            f'     reg add "{WEBCLIENT_KEY}" /v FileAttributesLimitInBytes /t REG_DWORD '
            f"/d {FILE_ATTRIBUTES_LIMIT} /f",
            "     net stop webclient & net start webclient",
            "",
            "   FileSizeLimitInBytes (default 50,000,000) is the largest file Explorer copies;",
            "   4294967295 is the most Windows allows. FileAttributesLimitInBytes (default",
            "   1,000,000) caps a folder listing at about 1,200 entries; 50,000,000 allows about 60,000.",
            "   BasicAuthLevel (default 1: Basic only over https) needs no change: "
            + ("this server uses https." if config.tls else "over http davfs uses Digest."),
            "",
            "3. Map the drive:",
            f"     net use Z: {config.url} /user:{user} * /persistent:yes",
            "   (`*` asks for the password.) Explorer: This PC > Map network drive > the URL above.",
            "",
        ]
    )
