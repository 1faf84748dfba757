"""Container image references split into registry, repository, tag and digest, and joined back (pure).

Form: `[registry/]repository[:tag][@digest]`. The first path part is a registry when it has a `.` or a
`:` or is `localhost` (Docker's rule), so `nginx` and `library/nginx` have none and `docker.io/nginx` has
`docker.io`. No normalisation: what is not overridden comes back byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class ImageRef:
    registry: str
    repository: str
    tag: str
    digest: str

    def with_component(self, component: str, value: str) -> ImageRef:
        """A copy with `component` (`registry`, `repository` or `tag`) set to `value`."""
        return replace(self, **{component: value})

    def __str__(self) -> str:
        text = "/".join(part for part in (self.registry, self.repository) if part)
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_image(image: str) -> ImageRef:
    rest, _, digest = image.partition("@")
    registry = ""
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, rest = first, remainder
    repository, tag = rest, ""
    name_start = rest.rfind("/") + 1
    colon = rest.find(":", name_start)
    if colon >= 0:
        repository, tag = rest[:colon], rest[colon + 1:]
    return ImageRef(registry, repository, tag, digest)
