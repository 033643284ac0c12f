# nginx-activity: build, run and test entry points.
#
#   make            build build/ngx_http_activity_module.so and build/activity-worker
#   make run        install what is missing, build, start the local stack
#   make stop       stop exactly what `make run` started
#   make test       install what is missing, build, run every test (prove)
#   make bench-track  nginx CPU per request: tracking vs a JSON access_log
#   make bench-dashboard  live latency: ours vs Node + Socket.IO + BullMQ
#   make bench-store  worker store rate against raw COPY
#   make bench-soak   the whole stack for minutes under production faults
#   make bench-connect  1,000 dashboards connecting at once
#   make bench-deflate  permessage-deflate against plain frames
#   make bench-scale  CPU per event of each shared part (docs/scale-out.md)
#   make deb        Debian packages under build/deb/ (README "Debian packages")
#   make test-deb   install them here, check, purge (root; leaves the
#                   machine as found)

SHELL := /bin/bash

NGX_SRC ?= /usr/share/nginx/src
BUILD   := $(CURDIR)/build
NGX_BUILD := $(BUILD)/nginx

# Debian 12 packages: build, servers, and the test tools.
APT_BUILD := build-essential pkg-config nginx nginx-dev libhiredis-dev \
             libpq-dev libjansson-dev libjwt-dev libmicrohttpd-dev \
             zlib1g-dev redis-server postgresql
APT_TEST  := wrk libredis-perl libdbd-pg-perl libjson-pp-perl redis-sentinel \
             libio-socket-ssl-perl

CC      ?= cc
WARN    := -Wall -Wextra -Werror
CFLAGS  ?= -O2 -g
# where the worker looks for its migrations by default (--sql-dir);
# the Debian package sets /usr/share/activity-worker/sql
SQL_DIR ?= $(CURDIR)/sql
W_CFLAGS := $(CFLAGS) $(WARN) -std=gnu11 -D_GNU_SOURCE -I/usr/include/postgresql \
            -DACTIVITY_SQL_DIR='"$(SQL_DIR)"'
W_LIBS  := -pthread -lhiredis -lpq -ljansson -ljwt -lmicrohttpd

# common/: pure C shared by the module and the worker (event checks)
COMMON_SRCS := $(wildcard common/*.c)
COMMON_HDRS := $(wildcard common/*.h)
MODULE_SRCS := $(wildcard ngx_module/*.c) $(wildcard ngx_module/*.h) config \
               $(COMMON_SRCS) $(COMMON_HDRS)
WORKER_SRCS := $(wildcard worker/*.c) $(COMMON_SRCS)
WORKER_HDRS := $(wildcard worker/*.h) $(COMMON_HDRS)

.PHONY: all deps deps-test module worker test run stop clean bench-track \
        bench-dashboard bench-soak bench-store bench-connect bench-deflate

all: module worker

module: $(BUILD)/ngx_http_activity_module.so
worker: $(BUILD)/activity-worker

# Install only the packages this machine lacks (root, or sudo).
define apt_install
	@missing=$$(for p in $(1); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	        | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing:" $$missing; \
	    sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	    $$sudo apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq \
	        --no-install-recommends $$missing >/dev/null; \
	fi
endef

deps:
	$(call apt_install,$(APT_BUILD))

deps-test: deps
	$(call apt_install,$(APT_TEST))
	@# the Node test clients (socket.io-client, ws); Node 20 and npm
	@# come with the machine
	@if [ ! -d t/js/node_modules ] || [ t/js/package-lock.json -nt \
	    t/js/node_modules/.package-lock.json ]; then \
	    npm ci --prefix t/js --no-audit --no-fund; fi

# The module is configured with Debian's own flags (--with-compat) so the
# stock nginx accepts it; nothing is written under $(NGX_SRC).
$(NGX_BUILD)/Makefile: config
	@mkdir -p $(NGX_BUILD)
	cd $(NGX_SRC) && . ./conf_flags && ./configure "$${NGX_CONF_FLAGS[@]}" \
	    --with-cc-opt="$$(dpkg-buildflags --get CFLAGS) -fPIC" \
	    --with-ld-opt="$$(dpkg-buildflags --get LDFLAGS) -fPIC" \
	    --add-dynamic-module=$(CURDIR) --builddir=$(NGX_BUILD) >$(NGX_BUILD)/configure.log \
	    || { tail -20 $(NGX_BUILD)/configure.log; exit 1; }

$(BUILD)/ngx_http_activity_module.so: $(NGX_BUILD)/Makefile $(MODULE_SRCS)
	$(MAKE) -s -f $(NGX_BUILD)/Makefile -C $(NGX_SRC) modules
	@# a new inode: a running nginx keeps its mapping of the old file
	cp $(NGX_BUILD)/ngx_http_activity_module.so $@.tmp && mv -f $@.tmp $@

$(BUILD)/activity-worker: $(WORKER_SRCS) $(WORKER_HDRS)
	@mkdir -p $(BUILD)
	$(CC) $(W_CFLAGS) -o $@.tmp $(WORKER_SRCS) $(W_LIBS) && mv -f $@.tmp $@

# The sanitizer pass covers the network-facing paths (a full pass is
# make test-asan, about 4 minutes).
ASAN_SMOKE := t/hostile.t t/dashboard_socketio.t t/dashboard_websocket.t \
              t/ingest.t t/access_jwt.t t/event_json.t t/redis_outage.t \
              t/utf8.t t/field_sizes.t t/subscriber.t t/hostile_tls.t \
              t/dashboard_hardening.t t/dashboard_deflate.t t/resume.t \
              t/resume_rooms.t t/redis_sentinel.t t/redis_sentinel_stall.t \
              t/redis_wait_refused.t

# every test file starts its own servers on free ports: two at a time
test: deps-test all fuzz-smoke
	prove -j2 -r t/
	$(MAKE) --no-print-directory test-asan TESTS="$(ASAN_SMOKE)"

run: deps all
	scripts/stack start

stop:
	scripts/stack stop

bench-track: deps-test all
	bench/track.sh

# our stack and the Node stack it replaces (bench/baseline/, from npm),
# the same dashboard clients (build/dashclient) on both, alternating
bench-dashboard: deps-test all $(BUILD)/dashclient
	npm ci --prefix bench/baseline --no-audit --no-fund
	bench/dashboard.sh

$(BUILD)/dashclient: bench/dashclient.c
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS) $(WARN) -std=gnu11 -D_GNU_SOURCE -o $@ $<

# the worker's store rate against a raw COPY of the same N rows
bench-store: deps-test all
	bench/store.sh

# the whole stack for MINUTES (10) under production's faults
bench-soak: deps-test all
	bench/soak.sh

# N dashboards (1000) connecting at once: time to every snapshot, CPU
bench-connect: deps-test all
	bench/connect.sh

# bytes on the wire and nginx CPU per frame, with and without deflate
bench-deflate: deps-test all
	bench/deflate.sh

# CPU per event of Redis, nginx, the worker, PostgreSQL (docs/scale-out.md)
.PHONY: bench-scale
bench-scale: deps-test all
	bench/scale.sh

clean:
	rm -rf $(BUILD)

# The dashboard page's npm packages (web/node_modules: socket.io-client's
# browser bundle, which nginx serves); `make` and `make run` need them.
# t/browser.t also needs Debian's chromium and playwright-core
# (t/browser/), which never downloads a browser of its own.
.PHONY: web-deps browser-deps
all: web-deps
deps-test: browser-deps

web-deps:
	@if [ ! -d web/node_modules ] || [ web/package-lock.json -nt \
	    web/node_modules/.package-lock.json ]; then \
	    npm ci --prefix web --no-audit --no-fund; fi

browser-deps: web-deps
	$(call apt_install,chromium)
	@if [ ! -d t/browser/node_modules ] || [ t/browser/package-lock.json \
	    -nt t/browser/node_modules/.package-lock.json ]; then \
	    npm ci --prefix t/browser --no-audit --no-fund; fi

# --- fuzzing and sanitizers (fuzz/README.md) -----------------------------
#
#   make fuzz        each libFuzzer target for FUZZ_TIME seconds (60)
#   make fuzz-smoke  each target for FUZZ_SMOKE_TIME seconds (8); part of
#                    `make test`, fails on any crash
#   make test-asan   the suite against the module and the worker built
#                    with -fsanitize=address,undefined (TESTS= to narrow)
.PHONY: deps-fuzz fuzz fuzz-smoke fuzz-build asan test-asan

APT_FUZZ   := clang libclang-rt-14-dev libssl-dev
FUZZ_CC    := clang
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined \
              -fno-sanitize-recover=all -Wall -Wextra -Werror \
              -std=gnu11 -D_GNU_SOURCE
FUZZ_DIR   := $(BUILD)/fuzz
FUZZ_TIME  ?= 60
FUZZ_SMOKE_TIME ?= 8
FUZZERS    := ws_frames sio_packet event_json jwt_token event_writer \
              ws_extensions batch_scan

$(FUZZ_DIR)/ws_frames:  ngx_module/ngx_http_activity_ws.c \
                        ngx_module/ngx_http_activity_ws.h
$(FUZZ_DIR)/ws_extensions: ngx_module/ngx_http_activity_ws.c \
                           ngx_module/ngx_http_activity_ws.h
$(FUZZ_DIR)/sio_packet: ngx_module/ngx_http_activity_sio.c \
                        ngx_module/ngx_http_activity_sio.h
$(FUZZ_DIR)/event_json: $(COMMON_SRCS) $(COMMON_HDRS)
$(FUZZ_DIR)/event_writer: $(COMMON_SRCS) $(COMMON_HDRS)
$(FUZZ_DIR)/batch_scan: common/activity_batch.c common/activity_batch.h \
                        common/activity_utf8.c common/activity_utf8.h
$(FUZZ_DIR)/jwt_token:  FUZZ_LIBS := -lcrypto

$(FUZZ_DIR)/%: fuzz/%.c
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $(filter %.c,$^) -ljwt -ljansson \
	    $(FUZZ_LIBS)

deps-fuzz:
	$(call apt_install,$(APT_FUZZ))

fuzz-build: deps-fuzz $(FUZZERS:%=$(FUZZ_DIR)/%)

.PRECIOUS: $(FUZZ_DIR)/%

# $(1): target, $(2): seconds, $(3): the corpus that grows (fuzz keeps
# build/fuzz/corpus/, fuzz-smoke starts afresh from the seeds each time
# so that its run time stays put). The seeds in fuzz/corpus/ are only
# read; a crash leaves build/fuzz/crashes/<target>-crash-<sha1> and
# fails the rule.
define fuzz_run
	@mkdir -p $(3) $(FUZZ_DIR)/crashes
	@printf 'fuzz %-11s %3ss ' $(1) $(2); \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	UBSAN_OPTIONS=print_stacktrace=1 \
	$(FUZZ_DIR)/$(1) -max_total_time=$(2) -max_len=4096 -timeout=10 \
	    -rss_limit_mb=1024 -dict=fuzz/dict/$(1).dict \
	    -artifact_prefix=$(FUZZ_DIR)/crashes/$(1)- \
	    $(3) fuzz/corpus/$(1) \
	    >$(FUZZ_DIR)/$(1).log 2>&1; rc=$$?; \
	if [ $$rc != 0 ]; then echo FAILED; \
	    grep -A30 -m1 -E 'ERROR|runtime error|deadly signal' \
	        $(FUZZ_DIR)/$(1).log; \
	    grep -E 'Test unit written|^Base64' $(FUZZ_DIR)/$(1).log; \
	    exit 1; fi; \
	grep -o 'Done [0-9]* runs' $(FUZZ_DIR)/$(1).log
endef

fuzz: $(FUZZERS:%=fuzz-long-%)
fuzz-smoke: $(FUZZERS:%=fuzz-smoke-%)

fuzz-long-%: deps-fuzz $(FUZZ_DIR)/%
	$(call fuzz_run,$*,$(FUZZ_TIME),$(FUZZ_DIR)/corpus/$*)

fuzz-smoke-%: deps-fuzz $(FUZZ_DIR)/%
	@rm -rf $(FUZZ_DIR)/smoke/$*
	$(call fuzz_run,$*,$(FUZZ_SMOKE_TIME),$(FUZZ_DIR)/smoke/$*)

# The sanitizer build: the worker and a second configure of the module
# with ASan and UBSan (gcc, like nginx itself), for the test suite. The
# stock nginx is not instrumented, so the harness preloads gcc's ASan
# runtime into nginx alone (TEST_NGINX_PRELOAD).
ASAN_DIR   := $(BUILD)/asan
ASAN_FLAGS := -fsanitize=address,undefined,float-cast-overflow \
              -fno-omit-frame-pointer
TESTS      ?= t/

$(ASAN_DIR)/activity-worker: $(WORKER_SRCS) $(WORKER_HDRS)
	@mkdir -p $(ASAN_DIR)
	$(CC) $(W_CFLAGS) -O1 $(ASAN_FLAGS) -o $@.tmp $(WORKER_SRCS) \
	    $(W_LIBS) && mv -f $@.tmp $@

$(ASAN_DIR)/nginx/Makefile: config
	@mkdir -p $(ASAN_DIR)/nginx
	cd $(NGX_SRC) && . ./conf_flags && ./configure "$${NGX_CONF_FLAGS[@]}" \
	    --with-cc-opt="$$(dpkg-buildflags --get CFLAGS) -fPIC $(ASAN_FLAGS)" \
	    --with-ld-opt="$$(dpkg-buildflags --get LDFLAGS) -fPIC $(ASAN_FLAGS)" \
	    --add-dynamic-module=$(CURDIR) --builddir=$(ASAN_DIR)/nginx \
	    >$(ASAN_DIR)/nginx/configure.log \
	    || { tail -20 $(ASAN_DIR)/nginx/configure.log; exit 1; }

$(ASAN_DIR)/ngx_http_activity_module.so: $(ASAN_DIR)/nginx/Makefile \
                                         $(MODULE_SRCS)
	$(MAKE) -s -f $(ASAN_DIR)/nginx/Makefile -C $(NGX_SRC) modules
	cp $(ASAN_DIR)/nginx/ngx_http_activity_module.so $@.tmp && mv -f $@.tmp $@

asan: deps $(ASAN_DIR)/activity-worker $(ASAN_DIR)/ngx_http_activity_module.so

test-asan: deps-test asan web-deps
	TEST_ACTIVITY_MODULE=$(ASAN_DIR)/ngx_http_activity_module.so \
	TEST_ACTIVITY_WORKER=$(ASAN_DIR)/activity-worker \
	TEST_NGINX_PRELOAD=$$($(CC) -print-file-name=libasan.so) \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	UBSAN_OPTIONS=print_stacktrace=1 \
	prove -r $(TESTS)

# --- Debian packages (debian/, README "Debian packages") ------------------
#
#   make deb       build/deb/libnginx-mod-http-activity_*.deb and
#                  build/deb/activity-worker_*.deb, built by
#                  dpkg-buildpackage in a copy of this tree
#   make test-deb  apt-get install both here, check nginx -t, the worker
#                  and its unit, purge them (scripts/test-deb)
.PHONY: deps-deb deb test-deb

APT_DEB := debhelper dpkg-dev fakeroot nginx-dev pkg-config libhiredis-dev \
           libpq-dev libjansson-dev libjwt-dev libmicrohttpd-dev zlib1g-dev
DEB_DIR := $(BUILD)/deb

deps-deb:
	$(call apt_install,$(APT_DEB))

deb: deps-deb
	rm -rf $(DEB_DIR)
	mkdir -p $(DEB_DIR)/src/nginx-activity
	tar -cf - --exclude-vcs --exclude=./build --exclude=./.run \
	    --exclude=./t/tmp --exclude=node_modules . \
	    | tar -xf - -C $(DEB_DIR)/src/nginx-activity
	cd $(DEB_DIR)/src/nginx-activity && dpkg-buildpackage -us -uc -b \
	    >$(DEB_DIR)/build.log 2>&1 \
	    || { tail -30 $(DEB_DIR)/build.log; exit 1; }
	@# debug symbols apart, so that apt-get install ./build/deb/*.deb
	@# installs the two packages
	mkdir -p $(DEB_DIR)/dbgsym
	mv $(DEB_DIR)/src/*-dbgsym_*.deb $(DEB_DIR)/dbgsym/
	mv $(DEB_DIR)/src/*.deb $(DEB_DIR)/
	rm -rf $(DEB_DIR)/src
	@ls -1 $(DEB_DIR)/*.deb

test-deb: deb
	scripts/test-deb $(DEB_DIR)
