<#
.SYNOPSIS
  Scope the mailtriage app to the shared mailboxes with RBAC for Applications (Exchange Online).

.DESCRIPTION
  Grants "Application Mail.ReadWrite", "Application Mail.Send" and
  "Application MailboxSettings.ReadWrite" to the mailtriage service principal, limited to a
  management scope that contains only the listed mailboxes, then checks each mailbox with
  Test-ServicePrincipalAuthorization. Run it in Exchange Online PowerShell
  (Connect-ExchangeOnline) as an Exchange administrator.

  Do NOT also grant tenant-wide admin consent for Mail.ReadWrite / Mail.Send /
  MailboxSettings.ReadWrite in Entra ID: the two grants add up and the Entra one covers
  every mailbox of the tenant.

.EXAMPLE
  ./scope-mailboxes.ps1 -AppId 11111111-1111-1111-1111-111111111111 `
      -ServicePrincipalObjectId 22222222-2222-2222-2222-222222222222 `
      -Mailboxes contact@contoso.com,info@contoso.com
#>
[CmdletBinding(SupportsShouldProcess = $true)]
param(
    [Parameter(Mandatory = $true)] [string] $AppId,
    # Object id of the *enterprise application* (service principal), not of the app registration.
    [Parameter(Mandatory = $true)] [string] $ServicePrincipalObjectId,
    [Parameter(Mandatory = $true)] [string[]] $Mailboxes,
    [string] $ScopeName = "mailtriage mailboxes",
    [string] $DisplayName = "mailtriage"
)

$ErrorActionPreference = "Stop"

# 1. The service principal, as Exchange Online knows it.
$sp = Get-ServicePrincipal -Identity $AppId -ErrorAction SilentlyContinue
if (-not $sp) {
    Write-Host "Creating the Exchange service principal for $AppId"
    $sp = New-ServicePrincipal -AppId $AppId -ObjectId $ServicePrincipalObjectId -DisplayName $DisplayName
}

# 2. A management scope containing exactly the shared mailboxes (by primary SMTP address).
$clauses = $Mailboxes | ForEach-Object { "PrimarySmtpAddress -eq '$($_.Trim())'" }
$filter = ($clauses -join " -or ")
$scope = Get-ManagementScope -Identity $ScopeName -ErrorAction SilentlyContinue
if ($scope) {
    Write-Host "Updating management scope '$ScopeName'"
    Set-ManagementScope -Identity $ScopeName -RecipientRestrictionFilter $filter
} else {
    Write-Host "Creating management scope '$ScopeName'"
    New-ManagementScope -Name $ScopeName -RecipientRestrictionFilter $filter | Out-Null
}

# 3. The three application roles, limited to that scope.
$roles = @("Application Mail.ReadWrite", "Application Mail.Send", "Application MailboxSettings.ReadWrite")
foreach ($role in $roles) {
    $existing = Get-ManagementRoleAssignment -RoleAssignee $sp.Identity -Role $role -ErrorAction SilentlyContinue |
        Where-Object { $_.CustomResourceScope -eq $ScopeName }
    if ($existing) {
        Write-Host "Role '$role' already assigned on '$ScopeName'"
        continue
    }
    Write-Host "Assigning '$role' on '$ScopeName'"
    New-ManagementRoleAssignment -App $sp.Identity -Role $role -CustomResourceScope $ScopeName | Out-Null
}

# 4. Check: every mailbox must show InScope = True for the three roles.
#    Test-ServicePrincipalAuthorization bypasses Exchange's permission cache; Graph itself
#    applies a change after 30 minutes to 2 hours (learn.microsoft.com/exchange/
#    permissions-exo/application-rbac, Limitations).
$failed = $false
foreach ($mb in $Mailboxes) {
    $result = Test-ServicePrincipalAuthorization -Identity $sp.Identity -Resource $mb.Trim()
    $result | Format-Table RoleName, GrantedPermissions, AllowedResourceScope, InScope -AutoSize
    if ($result | Where-Object { $roles -contains $_.RoleName -and -not $_.InScope }) {
        Write-Warning "$mb is not in scope for every mailtriage role yet"
        $failed = $true
    }
}
if ($failed) { exit 1 }
Write-Host "Done. Now run: mailtriage graph doctor"
