#!/usr/bin/env bash
# Starts a throwaway MIT Kerberos KDC on loopback for the AD CS issuer's Kerberos tests:
# its own realm, a user principal with a password, a service-account principal whose key is
# exported to a client keytab (keytab authentication), and an HTTP/<host> service principal whose
# key is exported to a keytab (the certsrv simulator's acceptor key). Everything lives in DIR.
#
#   scripts/krb5/start.sh DIR [REALM] [HOST]      # prints KEY=VALUE lines (also in DIR/env)
#   scripts/krb5/stop.sh DIR
#
# Needs Debian's krb5-kdc and krb5-admin-server (kdb5_util, kadmin.local); installs them when
# missing (as root). The tests stop the KDC with stop.sh.
set -euo pipefail

dir="$(mkdir -p "$1" && cd "$1" && pwd)"
realm="${2:-CERTBRIDGE.TEST}"
host="${3:-localhost}"
user="alice"
password="${KRB5_TEST_PASSWORD:-Kerb-pw-$RANDOM$RANDOM}"

if ! command -v krb5kdc >/dev/null 2>&1 && ! [[ -x /usr/sbin/krb5kdc ]]; then
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq krb5-kdc krb5-admin-server >&2
fi
export PATH="/usr/sbin:$PATH"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat >"$dir/krb5.conf" <<CONF
[libdefaults]
    default_realm = $realm
    dns_lookup_kdc = false
    dns_lookup_realm = false
    rdns = false
    udp_preference_limit = 1
[realms]
    $realm = {
        kdc = 127.0.0.1:$port
    }
CONF
cat >"$dir/kdc.conf" <<CONF
[kdcdefaults]
    kdc_listen = 127.0.0.1:$port
    kdc_tcp_listen = 127.0.0.1:$port
[realms]
    $realm = {
        database_name = $dir/principal
        key_stash_file = $dir/stash
        acl_file = $dir/kadm5.acl
        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
        max_life = 10h
    }
[logging]
    kdc = FILE:$dir/kdc.log
CONF
: >"$dir/kadm5.acl"
export KRB5_CONFIG="$dir/krb5.conf" KRB5_KDC_PROFILE="$dir/kdc.conf"
kdb5_util create -s -r "$realm" -P "master-$RANDOM$RANDOM" >/dev/null
# +requires_preauth: as Active Directory does by default (sspi expects the KDC to ask for it).
kadmin.local -q "addprinc +requires_preauth -pw $password $user@$realm" >/dev/null
kadmin.local -q "addprinc +requires_preauth -randkey svc-adcs@$realm" >/dev/null
kadmin.local -q "ktadd -k $dir/client.keytab svc-adcs@$realm" >/dev/null
kadmin.local -q "addprinc -randkey HTTP/$host@$realm" >/dev/null
kadmin.local -q "ktadd -k $dir/http.keytab HTTP/$host@$realm" >/dev/null
krb5kdc -n -P "$dir/kdc.pid" >>"$dir/kdc.log" 2>&1 &
echo $! >"$dir/kdc.pid"
# Wait until the KDC answers on TCP.
for _ in $(seq 1 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
    sleep 0.05
done
{
    echo "KRB5_CONFIG=$dir/krb5.conf"
    echo "KRB5_KTNAME=$dir/http.keytab"
    echo "KRB5_REALM=$realm"
    echo "KRB5_KDC=127.0.0.1:$port"
    echo "KRB5_USER=$user"
    echo "KRB5_PASSWORD=$password"
    echo "KRB5_SPN=HTTP/$host@$realm"
    echo "KRB5_CLIENT_KEYTAB=$dir/client.keytab"
    echo "KRB5_CLIENT_PRINCIPAL=svc-adcs@$realm"
    echo "KRB5_KDC_LOG=$dir/kdc.log"
} | tee "$dir/env"
