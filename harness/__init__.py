"""livedump test harness: pinned kernel source, series, config, build, rootfs, QEMU."""
