# `make install` / `make uninstall` for those who expect them; scripts/install.sh does the work.
# PREFIX (default /usr/local) and DESTDIR are passed through.
PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: all install uninstall test

all:
	swift build -c release --product umoci

install:
	PREFIX="$(PREFIX)" DESTDIR="$(DESTDIR)" scripts/install.sh install

uninstall:
	PREFIX="$(PREFIX)" DESTDIR="$(DESTDIR)" scripts/install.sh uninstall

test:
	scripts/test.sh
