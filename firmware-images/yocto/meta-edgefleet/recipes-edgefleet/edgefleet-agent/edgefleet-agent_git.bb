SUMMARY = "edgefleet device agent"
DESCRIPTION = "Follows an edgefleet controller's signed desired state (verified download, \
self-test, atomic swap, rollback) and serves ONNX models to local apps over KServe v2 HTTP."
HOMEPAGE = "https://github.com/edgefleet/edgefleet"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=9;endline=9;md5=2507bd5f0713f05419cd2f22fa06fe62"

SRC_URI = "git://github.com/edgefleet/edgefleet.git;protocol=https;branch=main"
SRCREV = "${AUTOREV}"
PV = "0.1.0+git"
S = "${WORKDIR}/git"

# The crate list is generated from Cargo.lock by the cargo-update-recipe-crates class:
#   bitbake -c update_crates edgefleet-agent
require ${BPN}-crates.inc

inherit cargo cargo-update-recipe-crates systemd useradd

# Build only the agent, with its default (tract, pure Rust) backend, size-optimised.
CARGO_BUILD_FLAGS:append = " -p edgefleet-agent"
CARGO_BUILD_PROFILE = "release-edge"

SYSTEMD_SERVICE:${PN} = "edgefleet-agent.service"
SYSTEMD_AUTO_ENABLE = "enable"

USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --home-dir /var/lib/edgefleet --no-create-home --shell /sbin/nologin edgefleet"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/firmware-images/common/edgefleet-agent.service ${D}${systemd_system_unitdir}/
    # Provisioning: the device maker's bbappend (or the factory) adds agent.toml, trust.json,
    # ca.crt and the one-time enroll-token; see firmware-images/README.md.
    install -d -m 0755 ${D}${sysconfdir}/edgefleet
    install -m 0644 ${S}/firmware-images/common/agent.toml.example ${D}${sysconfdir}/edgefleet/
}

FILES:${PN} += "${systemd_system_unitdir}/edgefleet-agent.service ${sysconfdir}/edgefleet"
