/*
 * actors/api_enroll pure helpers: the status an administrator sees for an invitation (a
 * pending one reads as expired from its expiry on, whatever is stored) and for an enrollment
 * (completed, pending while its SCEP challenge lives, expired). The API computes them on every
 * read; the integration test cannot wait for an expiry, so the boundaries are checked here.
 */
#include <stdio.h>
#include <string.h>

#include "actors/api_internal.h"
#include "check.h"

static mdm_invitation_t invitation(enum mdm_invite_status st, uint64_t expires_ms)
{
    mdm_invitation_t inv;
    memset(&inv, 0, sizeof(inv));
    snprintf(inv.id, sizeof(inv.id), "0123456789abcdef0123456789abcdef");
    snprintf(inv.user_name, sizeof(inv.user_name), "anna");
    inv.mode = MDM_INVITE_PIN;
    inv.status = (uint8_t)st;
    inv.created_ms = 1000;
    inv.expires_ms = expires_ms;
    return inv;
}

static void test_invitation_status(void)
{
    const uint64_t exp = 1714550000000ull;
    mdm_invitation_t inv = invitation(MDM_INVITE_PENDING, exp);
    CHECK_EQ_INT(mdm_api_invitation_status(&inv, 0), MDM_INVITE_PENDING);
    CHECK_EQ_INT(mdm_api_invitation_status(&inv, exp - 1), MDM_INVITE_PENDING);
    CHECK_EQ_INT(mdm_api_invitation_status(&inv, exp), MDM_INVITE_EXPIRED); /* at expiry */
    CHECK_EQ_INT(mdm_api_invitation_status(&inv, exp + 3600000), MDM_INVITE_EXPIRED);
    CHECK_EQ_INT(mdm_api_invitation_status(&inv, UINT64_MAX), MDM_INVITE_EXPIRED);
    /* Only pending ones expire: used and revoked keep their status. */
    static const enum mdm_invite_status final[] = {MDM_INVITE_USED, MDM_INVITE_REVOKED,
                                                   MDM_INVITE_EXPIRED};
    for (size_t i = 0; i < sizeof(final) / sizeof(final[0]); i++) {
        inv = invitation(final[i], exp);
        CHECK_EQ_INT(mdm_api_invitation_status(&inv, exp - 1), final[i]);
        CHECK_EQ_INT(mdm_api_invitation_status(&inv, exp + 1), final[i]);
    }
    /* A stored expired status stays expired even before expires_ms (clock set back). */
    inv = invitation(MDM_INVITE_EXPIRED, exp);
    CHECK_EQ_INT(mdm_api_invitation_status(&inv, 0), MDM_INVITE_EXPIRED);
    /* expires_ms 0 (never valid): expired at once. */
    inv = invitation(MDM_INVITE_PENDING, 0);
    CHECK_EQ_INT(mdm_api_invitation_status(&inv, 0), MDM_INVITE_EXPIRED);
    CHECK_STR(mdm_invite_status_name(mdm_api_invitation_status(&inv, 1)), "expired");
}

static void test_enrollment_status(void)
{
    mdm_enrollment_t e;
    memset(&e, 0, sizeof(e));
    snprintf(e.id, sizeof(e.id), "0123456789abcdef0123456789abcdef");
    snprintf(e.user_name, sizeof(e.user_name), "anna");
    e.created_ms = 1000;
    e.challenge_expires_ms = 5000;
    CHECK_STR(mdm_api_enrollment_status(&e, 1000), "pending");
    CHECK_STR(mdm_api_enrollment_status(&e, 4999), "pending");
    CHECK_STR(mdm_api_enrollment_status(&e, 5000), "expired");
    CHECK_STR(mdm_api_enrollment_status(&e, 9000), "expired");
    /* Completed stays completed after the challenge's expiry. */
    e.completed_ms = 4000;
    snprintf(e.udid, sizeof(e.udid), "0000FE00-1A2B3C4D5E6F7081");
    CHECK_STR(mdm_api_enrollment_status(&e, 9000), "completed");
    CHECK_STR(mdm_api_enrollment_status(&e, 2000), "completed");
}

int main(void)
{
    test_invitation_status();
    test_enrollment_status();
    return check_finish("api_enroll");
}
