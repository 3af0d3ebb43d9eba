#!/bin/sh
# udhcpc's hook: configure the address it was given (busybox passes the
# prefix length as $mask) and remember it for the console line in /init.
case "$1" in
    deconfig)
        ip addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        if [ -n "$router" ]; then ip route replace default via "${router%% *}" dev "$interface"; fi
        echo "$ip" > /tmp/address
        ;;
esac
exit 0
