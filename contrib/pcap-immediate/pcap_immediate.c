/* Turns on libpcap's immediate mode for every live capture, so softflowd
 * sees packets as they arrive instead of when a capture block fills. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
typedef struct pcap pcap_t;
int pcap_activate(pcap_t *p) {
    static int (*real)(pcap_t *) = NULL;
    int (*imm)(pcap_t *, int) = (int (*)(pcap_t *, int))dlsym(RTLD_DEFAULT, "pcap_set_immediate_mode");
    if (!real) real = (int (*)(pcap_t *))dlsym(RTLD_NEXT, "pcap_activate");
    if (imm) imm(p, 1);
    return real ? real(p) : -1;
}
