//! The four catalogues, each control mapped to the checks that evidence it —
//! or, where fleet evidence cannot judge it, saying so and what would make it
//! assessable.

use serde::{Deserialize, Serialize};

use crate::checks::Check;

/// A baseline the fleet is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Framework {
    /// The practical checklist (DESIGN.md §1): seven items.
    #[serde(rename = "checklist")]
    Checklist,
    /// ETSI EN 303 645 V2.1.1, cyber security for consumer IoT: 13 provisions
    /// (clauses 5.1–5.13).
    #[serde(rename = "etsi-en-303-645")]
    EtsiEn303645,
    /// NIST IR 8259A, the IoT device cybersecurity capability core baseline:
    /// six capabilities.
    #[serde(rename = "nist-ir-8259a")]
    NistIr8259a,
    /// EN 18031-1:2024, the harmonised standard under the Radio Equipment
    /// Directive's delegated act (Article 3.3(d), (e), (f); in force 2025-08-01):
    /// its security mechanisms.
    #[serde(rename = "en-18031")]
    En18031,
}

impl Framework {
    /// Every framework.
    pub const ALL: [Framework; 4] = [
        Framework::Checklist,
        Framework::EtsiEn303645,
        Framework::NistIr8259a,
        Framework::En18031,
    ];

    /// The name used on the command line and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Framework::Checklist => "checklist",
            Framework::EtsiEn303645 => "etsi-en-303-645",
            Framework::NistIr8259a => "nist-ir-8259a",
            Framework::En18031 => "en-18031",
        }
    }

    /// Its title.
    pub fn title(self) -> &'static str {
        match self {
            Framework::Checklist => "Practical checklist",
            Framework::EtsiEn303645 => "ETSI EN 303 645",
            Framework::NistIr8259a => "NIST IR 8259A",
            Framework::En18031 => "EN 18031-1",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// Its controls.
    pub fn controls(self) -> &'static [Control] {
        match self {
            Framework::Checklist => CHECKLIST,
            Framework::EtsiEn303645 => ETSI,
            Framework::NistIr8259a => NIST,
            Framework::En18031 => EN18031,
        }
    }
}

/// How a control is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// By these checks together: fail if any fails, unknown if any is unknown,
    /// pass if all pass.
    Checks(&'static [Check]),
    /// Fleet evidence cannot judge it; the text says what would.
    NotAssessable(&'static str),
}

/// One control of a framework.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// Its identifier in the framework (`5.3`, `CL4`, `SUM`).
    pub id: &'static str,
    /// Its title.
    pub title: &'static str,
    /// What it asks of a device, in one sentence.
    pub asks: &'static str,
    /// How Palisade judges it.
    pub basis: Basis,
}

use Check::*;

const CHECKLIST: &[Control] = &[
    Control {
        id: "CL1",
        title: "Unique, hardware-backed identity",
        asks: "Every device has its own key pair and identity, kept in a TPM or secure element.",
        basis: Basis::Checks(&[UniqueCredentials, HardwareIdentity]),
    },
    Control {
        id: "CL2",
        title: "Secure boot and signature-validated firmware updates",
        asks: "The device runs genuine firmware and installs only signed updates, keeping current.",
        basis: Basis::Checks(&[SoftwareIntegrity, UpdateCurrent]),
    },
    Control {
        id: "CL3",
        title: "Certificate-based authentication",
        asks: "The device authenticates to cloud and gateway with a certificate, renewed in time.",
        basis: Basis::Checks(&[CertificateAuth, ZeroTouchEnrolment]),
    },
    Control {
        id: "CL4",
        title: "Segmented network and least-privilege rules",
        asks: "The device sits in a segment whose gateway allows only what its model needs.",
        basis: Basis::Checks(&[Segmented]),
    },
    Control {
        id: "CL5",
        title: "Encrypted protocols suited to the device class",
        asks: "The device talks only over authenticated, encrypted protocols.",
        basis: Basis::Checks(&[EncryptedTransport]),
    },
    Control {
        id: "CL6",
        title: "Up-to-date inventory and continuous monitoring",
        asks: "The device is inventoried, heard from, and has no unhandled serious alert.",
        basis: Basis::Checks(&[Monitored, NoSeriousAlerts]),
    },
    Control {
        id: "CL7",
        title: "Supplier security requirements and an end-of-life plan",
        asks: "Its firmware comes from a governed supplier and its model has a declared support period.",
        basis: Basis::Checks(&[SupplierGoverned, Supported]),
    },
];

const ETSI: &[Control] = &[
    Control {
        id: "5.1",
        title: "No universal default passwords",
        asks: "No password is shared between devices or set at the factory to a universal value.",
        basis: Basis::Checks(&[UniqueCredentials]),
    },
    Control {
        id: "5.2",
        title: "Implement a means to manage reports of vulnerabilities",
        asks: "The manufacturer publishes a vulnerability disclosure policy and a contact.",
        basis: Basis::Checks(&[DisclosureContact]),
    },
    Control {
        id: "5.3",
        title: "Keep software updated",
        asks: "Software is updated securely and in time, within a published support period.",
        basis: Basis::Checks(&[UpdateCurrent, Supported]),
    },
    Control {
        id: "5.4",
        title: "Securely store sensitive security parameters",
        asks: "Keys and credentials are stored securely (hardware-backed where available).",
        basis: Basis::Checks(&[HardwareIdentity]),
    },
    Control {
        id: "5.5",
        title: "Communicate securely",
        asks: "Security-relevant communication is authenticated and encrypted with current cryptography.",
        basis: Basis::Checks(&[EncryptedTransport, CertificateAuth]),
    },
    Control {
        id: "5.6",
        title: "Minimize exposed attack surfaces",
        asks: "Unused interfaces and network access are closed; the device reaches only what it needs.",
        basis: Basis::Checks(&[Segmented]),
    },
    Control {
        id: "5.7",
        title: "Ensure software integrity",
        asks: "The device verifies its software (secure boot) and unauthorised changes are detected.",
        basis: Basis::Checks(&[SoftwareIntegrity]),
    },
    Control {
        id: "5.8",
        title: "Ensure that personal data is secure",
        asks: "Personal data is protected in transit and at rest, and processed as declared.",
        basis: Basis::NotAssessable(
            "not assessable from fleet evidence: what personal data a device processes is the manufacturer's declaration; transport encryption is judged under 5.5",
        ),
    },
    Control {
        id: "5.9",
        title: "Make systems resilient to outages",
        asks: "The device keeps working, and recovers, through network and power loss and failed updates.",
        basis: Basis::Checks(&[ResilientUpdates]),
    },
    Control {
        id: "5.10",
        title: "Examine system telemetry data",
        asks: "Telemetry is collected and examined for security anomalies.",
        basis: Basis::Checks(&[Monitored, NoSeriousAlerts]),
    },
    Control {
        id: "5.11",
        title: "Make it easy for users to delete user data",
        asks: "User data can be erased, for example when the device is resold or retired.",
        basis: Basis::NotAssessable(
            "not assessable from fleet evidence yet: it needs a verified crypto-erase with a signed wipe receipt at decommissioning",
        ),
    },
    Control {
        id: "5.12",
        title: "Make installation and maintenance of devices easy",
        asks: "Set-up and maintenance take few steps and follow secure defaults.",
        basis: Basis::Checks(&[ZeroTouchEnrolment]),
    },
    Control {
        id: "5.13",
        title: "Validate input data",
        asks: "Data input through interfaces is validated.",
        basis: Basis::NotAssessable(
            "not assessable from fleet evidence: input validation happens inside the device's software; a supplier's test report or fuzzing evidence per release would make it assessable",
        ),
    },
];

const NIST: &[Control] = &[
    Control {
        id: "IDENT",
        title: "Device identification",
        asks: "The device can be uniquely identified, logically and physically.",
        basis: Basis::Checks(&[UniqueCredentials, HardwareIdentity]),
    },
    Control {
        id: "CONFIG",
        title: "Device configuration",
        asks: "Its configuration can be changed only by authorised entities.",
        basis: Basis::Checks(&[CertificateAuth, EncryptedTransport]),
    },
    Control {
        id: "DATA",
        title: "Data protection",
        asks: "Data it stores and sends is protected from unauthorised access and modification.",
        basis: Basis::Checks(&[HardwareIdentity, EncryptedTransport]),
    },
    Control {
        id: "ACCESS",
        title: "Logical access to interfaces",
        asks: "Access to its local and network interfaces is restricted to authorised entities.",
        basis: Basis::Checks(&[Segmented, EncryptedTransport]),
    },
    Control {
        id: "UPDATE",
        title: "Software update",
        asks: "Its software can be updated by authorised entities through a secure mechanism.",
        basis: Basis::Checks(&[SoftwareIntegrity, UpdateCurrent]),
    },
    Control {
        id: "STATE",
        title: "Cybersecurity state awareness",
        asks: "It reports its cybersecurity state so that incidents can be detected.",
        basis: Basis::Checks(&[Monitored, NoSeriousAlerts]),
    },
];

const EN18031: &[Control] = &[
    Control {
        id: "ACM",
        title: "Access control mechanism",
        asks: "Only authorised entities reach the equipment's security and network assets.",
        basis: Basis::Checks(&[CertificateAuth]),
    },
    Control {
        id: "AUM",
        title: "Authentication mechanism",
        asks: "Entities are authenticated with unique, non-default credentials.",
        basis: Basis::Checks(&[UniqueCredentials, CertificateAuth]),
    },
    Control {
        id: "SUM",
        title: "Secure update mechanism",
        asks: "Software updates are authenticated and integrity-protected, and applied in time.",
        basis: Basis::Checks(&[SoftwareIntegrity, UpdateCurrent]),
    },
    Control {
        id: "SSM",
        title: "Secure storage mechanism",
        asks: "Security parameters are stored with integrity and confidentiality protection.",
        basis: Basis::Checks(&[HardwareIdentity]),
    },
    Control {
        id: "SCM",
        title: "Secure communication mechanism",
        asks: "Communication is authenticated, confidential and integrity-protected.",
        basis: Basis::Checks(&[EncryptedTransport]),
    },
    Control {
        id: "RLM",
        title: "Resilience mechanism",
        asks: "The equipment withstands and recovers from failures and attacks.",
        basis: Basis::Checks(&[ResilientUpdates]),
    },
    Control {
        id: "NMM",
        title: "Network monitoring mechanism",
        asks: "Network traffic and behaviour are monitored to detect attacks.",
        basis: Basis::Checks(&[Monitored, NoSeriousAlerts]),
    },
    Control {
        id: "TCM",
        title: "Traffic control mechanism",
        asks: "Traffic is limited to what the equipment needs.",
        basis: Basis::Checks(&[Segmented]),
    },
    Control {
        id: "LGM",
        title: "Logging mechanism",
        asks: "Security-relevant events are logged with integrity protection.",
        basis: Basis::Checks(&[Logged]),
    },
    Control {
        id: "DLM",
        title: "Deletion mechanism",
        asks: "User data and security parameters can be deleted.",
        basis: Basis::NotAssessable(
            "not assessable from fleet evidence yet: it needs a verified crypto-erase with a signed wipe receipt at decommissioning",
        ),
    },
    Control {
        id: "CRY",
        title: "Cryptography",
        asks: "Cryptographic algorithms and key lengths follow best practice.",
        basis: Basis::Checks(&[StrongCryptography]),
    },
    Control {
        id: "GEC",
        title: "General equipment capabilities",
        asks: "The equipment has no known exploitable vulnerabilities and stays supported.",
        basis: Basis::Checks(&[UpdateCurrent, Supported]),
    },
];
