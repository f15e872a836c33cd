SUMMARY = "edgefleet device agent"
DESCRIPTION = "Follows an edgefleet controller's signed desired state (verified download, \
self-test, atomic swap, rollback) and serves ONNX models to local apps over KServe v2 HTTP."
HOMEPAGE = "https://github.com/edgefleet/edgefleet"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

# Built from the repository this layer lives in (firmware-images/yocto/meta-edgefleet), so
# there is no source URL to trust or keep current: check out the release to build, then add the
# layer. A distribution packaging a release tarball sets SRC_URI/SRCREV in a bbappend instead.
inherit externalsrc
EXTERNALSRC = "${@os.path.abspath(os.path.join(d.getVar('THISDIR'), '../../../../..'))}"
EXTERNALSRC_BUILD = "${WORKDIR}/build"
PV = "0.1.0"

# Every crate, from Cargo.lock: firmware-images/yocto/update-crates.py writes it (CI checks it
# is current); bitbake fetches them with its crate:// fetcher, nothing else from the network.
require ${BPN}-crates.inc

inherit cargo systemd useradd

# Build only the agent, with its default (tract, pure Rust) backend, size-optimised.
CARGO_BUILD_FLAGS:append = " -p edgefleet-agent"
CARGO_BUILD_PROFILE = "release-edge"

SYSTEMD_SERVICE:${PN} = "edgefleet-agent.service edgefleet-firstboot.service"
SYSTEMD_AUTO_ENABLE = "enable"

USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --home-dir /var/lib/edgefleet --no-create-home --shell /sbin/nologin edgefleet"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/firmware-images/common/edgefleet-agent.service ${D}${systemd_system_unitdir}/
    install -m 0644 ${S}/firmware-images/common/edgefleet-firstboot.service ${D}${systemd_system_unitdir}/
    install -d ${D}${libexecdir}/edgefleet
    install -m 0755 ${S}/firmware-images/common/edgefleet-firstboot ${D}${libexecdir}/edgefleet/firstboot
    # Provisioning: the device maker's bbappend (or the factory) adds agent.toml, trust.json,
    # ca.crt and the one-time enroll-token; see firmware-images/README.md.
    install -d -m 0755 ${D}${sysconfdir}/edgefleet
    install -m 0644 ${S}/firmware-images/common/agent.toml.example ${D}${sysconfdir}/edgefleet/
}

FILES:${PN} += "${systemd_system_unitdir}/edgefleet-agent.service ${systemd_system_unitdir}/edgefleet-firstboot.service \
    ${libexecdir}/edgefleet ${sysconfdir}/edgefleet"
